//! Shrink-on-load for formats decoded row by row: each block of
//! `factor`×`factor` pixels is averaged as its rows arrive (libvips's
//! `shrink`), so a picture is made small while it is decoded, holding one
//! row of sums instead of the whole image. The thumbnail is then resized
//! from the shrunk copy with Lanczos3, as libvips reduces after shrinking.

use image::{DynamicImage, RgbImage, RgbaImage};

/// The integer shrink for a picture whose longest edge is `longest` on its
/// way to a thumbnail of `edge`: the shrunk copy keeps at least twice the
/// thumbnail's pixels along each edge, so the resize after it still has
/// detail to filter (libvips leaves the same factor of two to `reduce`).
pub fn factor(longest: u32, edge: u32) -> u32 {
    (longest / edge.saturating_mul(2).max(1)).max(1)
}

/// Averages blocks of rows as they come. Colour is averaged weighted by
/// alpha (premultiplied), so transparent pixels lend no colour to their block.
#[derive(Debug)]
pub struct BoxShrink {
    width: usize,
    height: usize,
    factor: usize,
    alpha: bool,
    /// Per output pixel: red, green and blue times alpha, and alpha.
    sums: Vec<u64>,
    /// Rows added to the current block, and in all.
    block_rows: usize,
    rows: usize,
    out: Vec<u8>,
}

impl BoxShrink {
    /// A shrink of a `width`×`height` picture by `factor`; `alpha` keeps an
    /// alpha channel in the result.
    pub fn new(width: u32, height: u32, factor: u32, alpha: bool) -> Self {
        let (width, height, factor) = (width as usize, height as usize, factor.max(1) as usize);
        let out_width = width.div_ceil(factor);
        let channels = if alpha { 4 } else { 3 };
        Self {
            width,
            height,
            factor,
            alpha,
            sums: vec![0; out_width * 4],
            block_rows: 0,
            rows: 0,
            out: Vec::with_capacity(out_width * height.div_ceil(factor) * channels),
        }
    }

    /// The next row, 8 bits per sample: grey, grey and alpha, RGB or RGBA
    /// (`channels` 1 to 4). A row past the picture's height is ignored.
    pub fn push(&mut self, row: &[u8], channels: usize) {
        if self.rows >= self.height {
            return;
        }
        if self.factor == 1 {
            // Nothing to average: the row is only widened to RGB(A).
            self.copy(row, channels);
            self.rows += 1;
            return;
        }
        match channels {
            1 => self.add(row, |p: &[u8; 1]| [p[0], p[0], p[0], 255]),
            2 => self.add(row, |p: &[u8; 2]| [p[0], p[0], p[0], p[1]]),
            3 => self.add(row, |p: &[u8; 3]| [p[0], p[1], p[2], 255]),
            _ => self.add(row, |p: &[u8; 4]| *p),
        }
        self.block_rows += 1;
        self.rows += 1;
        if self.block_rows == self.factor || self.rows == self.height {
            self.flush();
        }
    }

    fn add<const N: usize>(&mut self, row: &[u8], rgba: impl Fn(&[u8; N]) -> [u8; 4]) {
        let pixels = row.chunks_exact(N).take(self.width);
        for (x, pixel) in pixels.enumerate() {
            let Ok(pixel) = <&[u8; N]>::try_from(pixel) else { continue };
            let [r, g, b, a] = rgba(pixel);
            let a = u64::from(a);
            let sum = &mut self.sums[(x / self.factor) * 4..][..4];
            sum[0] += u64::from(r) * a;
            sum[1] += u64::from(g) * a;
            sum[2] += u64::from(b) * a;
            sum[3] += a;
        }
    }

    fn copy(&mut self, row: &[u8], channels: usize) {
        let pixels = row.chunks_exact(channels.max(1)).take(self.width);
        for p in pixels {
            let [r, g, b, a] = match *p {
                [v] => [v, v, v, 255],
                [v, a] => [v, v, v, a],
                [r, g, b] => [r, g, b, 255],
                [r, g, b, a, ..] => [r, g, b, a],
                [] => [0, 0, 0, 0],
            };
            self.out.extend_from_slice(&[r, g, b]);
            if self.alpha {
                self.out.push(a);
            }
        }
    }

    /// Ends the current block of rows: one row of averages.
    fn flush(&mut self) {
        let rows = self.block_rows as u64;
        for (column, sum) in self.sums.chunks_exact_mut(4).enumerate() {
            let columns = (self.width - column * self.factor).min(self.factor) as u64;
            let (weight, count) = (sum[3], rows * columns);
            let colour = |c: u64| (c + weight / 2).checked_div(weight).unwrap_or(0) as u8;
            self.out.extend_from_slice(&[colour(sum[0]), colour(sum[1]), colour(sum[2])]);
            if self.alpha {
                self.out.push(((weight + count / 2) / count) as u8);
            }
            sum.fill(0);
        }
        self.block_rows = 0;
    }

    /// The shrunk picture, RGB8 or RGBA8; `None` if fewer rows came than
    /// the picture has.
    pub fn finish(self) -> Option<DynamicImage> {
        if self.rows < self.height {
            return None;
        }
        let (width, height) = (self.width.div_ceil(self.factor) as u32, self.height.div_ceil(self.factor) as u32);
        if self.alpha {
            RgbaImage::from_raw(width, height, self.out).map(DynamicImage::ImageRgba8)
        } else {
            RgbImage::from_raw(width, height, self.out).map(DynamicImage::ImageRgb8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_factor_leaves_twice_the_thumbnail_and_never_enlarges() {
        assert_eq!(factor(3000, 256), 5);
        assert_eq!(factor(600, 256), 1);
        assert_eq!(factor(100, 256), 1);
        assert_eq!(factor(100_000, 256), 195);
    }

    #[test]
    fn blocks_are_averaged_and_ragged_edges_over_the_pixels_they_have() {
        // 3x3 grey picture shrunk by 2: a 2x2 block, two edge blocks of 2, a corner of 1.
        let rows: [[u8; 3]; 3] = [[0, 100, 7], [200, 50, 9], [10, 20, 30]];
        let mut shrink = BoxShrink::new(3, 3, 2, false);
        for row in &rows {
            shrink.push(row, 1);
        }
        let img = shrink.finish().expect("all rows").into_rgb8();
        assert_eq!(img.dimensions(), (2, 2));
        let grey = |x, y| img.get_pixel(x, y).0;
        assert_eq!(grey(0, 0), [88; 3], "(0 + 100 + 200 + 50) / 4 = 87.5, rounded");
        assert_eq!(grey(1, 0), [8; 3]);
        assert_eq!(grey(0, 1), [15; 3]);
        assert_eq!(grey(1, 1), [30; 3]);
    }

    #[test]
    fn colour_is_weighted_by_alpha_so_transparent_pixels_lend_none() {
        // Opaque red beside fully transparent green: the block is red at half alpha.
        let row = [255, 0, 0, 255, 0, 255, 0, 0];
        let mut shrink = BoxShrink::new(2, 1, 2, true);
        shrink.push(&row, 4);
        let img = shrink.finish().expect("all rows").into_rgba8();
        assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0, 128]);
    }

    #[test]
    fn by_a_factor_of_one_rows_are_only_widened_to_rgb() {
        let mut shrink = BoxShrink::new(2, 1, 1, true);
        shrink.push(&[10, 200, 20, 0], 2);
        let img = shrink.finish().expect("all rows").into_rgba8();
        assert_eq!((img.get_pixel(0, 0).0, img.get_pixel(1, 0).0), ([10, 10, 10, 200], [20, 20, 20, 0]));
    }

    #[test]
    fn a_picture_missing_rows_gives_nothing() {
        let mut shrink = BoxShrink::new(2, 3, 2, false);
        shrink.push(&[1, 2, 3, 4, 5, 6], 3);
        assert!(shrink.finish().is_none());
    }
}
