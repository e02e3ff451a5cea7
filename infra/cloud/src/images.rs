//! Small generated images for load runs and tests (the `png` crate alone, so
//! nothing here compiles the processors' codecs).

/// `rgb` (three bytes a pixel, row by row) encoded as an 8-bit RGB PNG.
pub fn png_rgb(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

/// A `width` × `height` gradient whose blue channel is `blue`.
pub fn gradient_png(width: u32, height: u32, blue: u8) -> Result<Vec<u8>, png::EncodingError> {
    let rgb: Vec<u8> = (0..height).flat_map(|y| (0..width).flat_map(move |x| [(x % 256) as u8, (y % 256) as u8, blue])).collect();
    png_rgb(width, height, &rgb)
}
