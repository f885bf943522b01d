fn main() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    });
    for a in pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY)) {
        println!("{:?}", a.get_info());
        println!("{:?}", a.features());
        let l = a.limits();
        println!("wg storage {} invocations {} storage binding {} buffers/stage {} dyn storage {} dyn uniform {} immediates {}", l.max_compute_workgroup_storage_size, l.max_compute_invocations_per_workgroup, l.max_storage_buffer_binding_size, l.max_storage_buffers_per_shader_stage, l.max_dynamic_storage_buffers_per_pipeline_layout, l.max_dynamic_uniform_buffers_per_pipeline_layout, l.max_immediate_size);
        println!(
            "subgroups {}..{}",
            a.get_info().subgroup_min_size,
            a.get_info().subgroup_max_size
        );
        for c in a.cooperative_matrix_properties() {
            println!("{c:?}");
        }
    }
}
