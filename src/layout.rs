//! The matrix vocabulary both backends share: where a matrix's elements lie (`Layout`), and a
//! matrix as data plus layout (`Mat`, `MatMut`). The CPU's `ops::matmul` and the GPU's `matmul`
//! kernel take the same description, so one product can read `W`, `Wᵀ`, `A` or `Aᵀ` on either
//! without copying anything.

/// Where a matrix's elements lie: element (i, j) is at `i * rs + j * cs`.
/// Strides let one product read `W`, `Wᵀ`, `A` or `Aᵀ` without copying anything; the GPU's
/// matmul takes the same description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Layout {
    /// Rows stored one after another (the weights `W`).
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Layout {
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// Columns stored one after another (activations: one sample's column is contiguous).
    pub fn col_major(rows: usize, cols: usize) -> Self {
        Layout {
            rows,
            cols,
            rs: 1,
            cs: rows,
        }
    }

    /// The transpose: the same elements, read the other way round.
    pub fn t(self) -> Self {
        Layout {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// One past the largest index the layout touches.
    pub fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// A read-only matrix: data and its layout.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub layout: Layout,
}

impl<'a> Mat<'a> {
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            layout: Layout::row_major(rows, cols),
        }
    }

    pub fn col_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            layout: Layout::col_major(rows, cols),
        }
    }

    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            layout: self.layout.t(),
        }
    }
}

/// The output of a product.
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub layout: Layout,
}

impl<'a> MatMut<'a> {
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            layout: Layout::row_major(rows, cols),
        }
    }

    pub fn col_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut {
            data,
            layout: Layout::col_major(rows, cols),
        }
    }
}
