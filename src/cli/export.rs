//! `mnist-gpu export`: a saved model (or a checkpoint) as an ONNX file for other runtimes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use super::{check_output, same_file};
use mnist_gpu::error::{config, Result};
use mnist_gpu::{model_file, onnx};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A model saved with --save, or a checkpoint (its current model, as predict reads it).
    #[arg(long)]
    pub model: PathBuf,

    /// Where to write the ONNX model: input `pixels` float32 [N, 784] of raw 0-255 pixels,
    /// output `probabilities` float32 [N, 10].
    #[arg(long, value_name = "FILE.onnx")]
    pub onnx: PathBuf,
}

pub fn export(args: &ExportArgs) -> Result<()> {
    check_output(&Some(args.onnx.clone()), "--onnx", &["onnx"])?;
    if same_file(&args.model, &args.onnx) {
        return config(format!(
            "--onnx {}: is the model file itself; choose another path",
            args.onnx.display()
        ));
    }
    let file = model_file::load(&args.model)?;
    let metadata = with_checkpoint_options(file.metadata);
    onnx::save(&args.onnx, &file.model, &metadata)?;
    let hidden: Vec<String> = file.model.hidden().iter().map(|h| h.to_string()).collect();
    println!(
        "wrote {} (ONNX opset {}): hidden layers {}, {}; input {} float32 [N, 784] of 0-255 \
         pixels, output {} float32 [N, 10]",
        args.onnx.display(),
        onnx::OPSET,
        hidden.join(","),
        file.model.activation.name(),
        onnx::INPUT,
        onnx::OUTPUT
    );
    Ok(())
}

/// A checkpoint keeps its run's options inside its `checkpoint` record rather than as
/// `options`: brought out, so that an exported checkpoint says how it was trained as a
/// `--save` file does. A record that does not parse adds nothing (the model was read).
fn with_checkpoint_options(mut metadata: BTreeMap<String, String>) -> BTreeMap<String, String> {
    if metadata.contains_key("options") || !model_file::is_checkpoint(&metadata) {
        return metadata;
    }
    let options = metadata
        .get("checkpoint")
        .and_then(|run| serde_json::from_str::<serde_json::Value>(run).ok())
        .map(|run| run["options"].clone())
        .filter(|options| options.is_object());
    if let Some(options) = options {
        metadata.insert("options".into(), options.to_string());
    }
    metadata
}
