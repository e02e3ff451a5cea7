//! process-image on generated images: dimensions, orientation, EXIF without
//! location in the outputs, thumbnails, palette, hashes, and refusals.

use std::io::Cursor;
use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use chrono::Utc;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use prism_shared::app::processing::{Progress, WorkError};
use prism_shared::domain::results::JobResult;
use prism_shared::ports::JobStore;
use prism_shared::testing::memory::{MemoryBlobStore, MemoryJobStore};
use prism_shared::testing::{memory_deps, sample_event};
use prism_shared::{Job, JobEventEnvelope, JobId, JobStatus, Priority, S3Uri};
use process_image::analysis::{Analysed, ImageError, ImageLimits, Parts, check_header, dhash, hash_distance};
use process_image::{Config, THUMBNAIL_SIZES, handle};

/// The analysis outside a job.
fn analyse(bytes: &[u8]) -> Result<Analysed, ImageError> {
    process_image::analysis::analyse(bytes, &ImageLimits::default(), &THUMBNAIL_SIZES, Parts::All, &Progress::detached())
}

/// Two colour bands with a gradient, so resizing and hashing have something to see.
fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        if y < height / 3 { Rgb([200, 30, 30]) } else { Rgb([(x * 255 / width) as u8, 90, (y * 255 / height) as u8]) }
    })
}

/// The colour `#rrggbb`, as three channels.
fn rgb(hex: &str) -> [u8; 3] {
    let channel = |i: usize| u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).unwrap_or_else(|e| panic!("{hex}: {e}"));
    [channel(0), channel(1), channel(2)]
}

/// Whether `hex` is within `tolerance` of `want` in every channel (JPEG shifts colours a little).
fn near(hex: &str, want: [u8; 3], tolerance: u8) -> bool {
    rgb(hex).iter().zip(want).all(|(got, want)| got.abs_diff(want) <= tolerance)
}

/// The picture's top band.
const RED_BAND: [u8; 3] = [200, 30, 30];

fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A minimal big-endian EXIF block: Orientation 6 (rotate 90° clockwise) and a GPS IFD.
fn exif_app1() -> Vec<u8> {
    let mut tiff = b"MM\0\x2A\0\0\0\x08".to_vec();
    tiff.extend([0, 2]); // IFD0: two entries
    tiff.extend([0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]); // Orientation = 6
    tiff.extend([0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 38]); // GPS IFD at 38
    tiff.extend([0, 0, 0, 0]);
    tiff.extend([0, 1]); // GPS IFD: one entry
    tiff.extend([0x00, 0x01, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0]); // GPSLatitudeRef = "N"
    tiff.extend([0, 0, 0, 0]);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend(u16::try_from(tiff.len() + 8).expect("len").to_be_bytes());
    app1.extend(b"Exif\0\0");
    app1.extend(tiff);
    app1
}

fn with_exif(jpeg: &[u8]) -> Vec<u8> {
    [&jpeg[..2], &exif_app1(), &jpeg[2..]].concat()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG whose header claims 60,000 × 60,000 pixels and whose data is a few bytes.
fn huge_png_header() -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(60_000u32.to_be_bytes());
    ihdr.extend(60_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    let idat = b"IDAT\x78\x9c\x63\x00\x00".to_vec();
    png.extend(5u32.to_be_bytes());
    png.extend(&idat);
    png.extend(crc32(&idat).to_be_bytes());
    png
}

#[test]
fn reads_dimensions_applies_orientation_and_never_copies_exif() {
    let jpeg = with_exif(&encoded(&DynamicImage::ImageRgb8(picture(1600, 800)), ImageFormat::Jpeg));
    let analysed = analyse(&jpeg).expect("analyse");
    let r = &analysed.result;
    assert_eq!((r.format.as_str(), r.width, r.height), ("jpeg", 1600, 800));
    assert_eq!((r.display_width, r.display_height), (800, 1600), "orientation 6 turns it upright");
    let exif = r.exif.as_ref().expect("exif");
    assert_eq!(exif.orientation, 6);
    assert!(exif.has_gps);
    let sizes: Vec<(u32, u32)> = analysed.thumbnails.iter().map(|t| (t.meta.width, t.meta.height)).collect();
    assert_eq!(sizes, vec![(512, 1024), (128, 256)]);
    for thumb in &analysed.thumbnails {
        assert_eq!(thumb.meta.content_type, "image/jpeg");
        let decoded = image::load_from_memory(&thumb.bytes).expect("thumbnail decodes");
        assert_eq!((decoded.width(), decoded.height()), (thumb.meta.width, thumb.meta.height));
        assert!(!thumb.bytes.windows(4).any(|w| w == b"Exif"), "no EXIF, so no location, in {}", thumb.file);
    }
    assert_eq!(r.palette.len(), 5);
    assert!((r.palette.iter().map(|c| c.share).sum::<f32>() - 1.0).abs() < 0.01);
    let first = &r.palette[0];
    assert!(near(&first.hex, RED_BAND, 8) && first.share >= 0.25, "the red band (a third of the picture) comes first: {:?}", r.palette);
}

#[test]
fn a_workflow_step_does_only_its_part_and_the_palette_step_matches_the_whole() {
    use prism_shared::domain::workflow::Action;
    let jpeg = encoded(&DynamicImage::ImageRgb8(picture(1600, 800)), ImageFormat::Jpeg);
    let part = |action| {
        let parts = Parts::for_action(action);
        process_image::analysis::analyse(&jpeg, &ImageLimits::default(), &THUMBNAIL_SIZES, parts, &Progress::detached()).expect("analyse")
    };
    let whole = part(None);
    let thumbnails = part(Some(Action::ImageThumbnails));
    let palette = part(Some(Action::ImagePalette));
    assert_eq!(Parts::for_action(Some(Action::ProcessImage)), Parts::All);

    assert_eq!(thumbnails.thumbnails.len(), 2);
    assert_eq!(thumbnails.result.thumbnails, whole.result.thumbnails);
    assert!(thumbnails.result.palette.is_empty() && thumbnails.result.perceptual_hash.is_none(), "{:?}", thumbnails.result);

    assert!(palette.thumbnails.is_empty() && palette.result.thumbnails.is_empty(), "no thumbnails: {:?}", palette.result.thumbnails);
    assert_eq!(palette.result.palette.len(), 5);
    assert!(near(&palette.result.palette[0].hex, RED_BAND, 8), "{:?}", palette.result.palette);
    let (alone, with_all) = (palette.result.perceptual_hash.as_deref(), whole.result.perceptual_hash.as_deref());
    let distance = hash_distance(
        u64::from_str_radix(alone.expect("hash"), 16).expect("hex"),
        u64::from_str_radix(with_all.expect("hash"), 16).expect("hex"),
    );
    assert!(distance <= 4, "the hash of a copy shrunk on load is the whole decode's, near enough: {alone:?} / {with_all:?}");
    assert_eq!((palette.result.width, palette.result.display_height), (1600, 800), "the facts are the whole image's");
}

#[test]
fn small_images_are_not_upscaled_and_alpha_makes_webp() {
    let rgba = RgbaImage::from_fn(100, 50, |x, _| Rgba([0, 0, 255, (x * 2) as u8]));
    let png = encoded(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png);
    let analysed = analyse(&png).expect("analyse");
    assert!(analysed.result.has_alpha);
    for thumb in &analysed.thumbnails {
        assert_eq!((thumb.meta.width, thumb.meta.height, thumb.meta.content_type.as_str()), (100, 50, "image/webp"));
        assert_eq!(image::guess_format(&thumb.bytes).expect("format"), ImageFormat::WebP);
    }
}

#[test]
fn near_duplicates_hash_close_and_different_images_far() {
    let a = DynamicImage::ImageRgb8(picture(640, 480));
    let resized = a.resize_exact(320, 240, image::imageops::FilterType::Triangle);
    let recompressed = image::load_from_memory(&encoded(&resized, ImageFormat::Jpeg)).expect("decode");
    let other = DynamicImage::ImageRgb8(RgbImage::from_fn(640, 480, |x, y| Rgb([((x ^ y) & 0xFF) as u8, (y % 256) as u8, 40])));
    assert!(hash_distance(dhash(&a), dhash(&recompressed)) <= 6);
    assert!(hash_distance(dhash(&a), dhash(&other)) > 16);
}

#[test]
fn huge_headers_are_refused_before_decoding() {
    let started = std::time::Instant::now();
    let err = check_header(&huge_png_header(), &ImageLimits::default()).expect_err("refused");
    assert_eq!(err.code(), "too_many_pixels", "{err}");
    assert!(started.elapsed() < std::time::Duration::from_millis(100));
}

#[test]
fn truncated_and_foreign_files_fail_with_a_reason() {
    let jpeg = encoded(&DynamicImage::ImageRgb8(picture(300, 200)), ImageFormat::Jpeg);
    for kept in [jpeg.len() / 3, jpeg.len() / 2, jpeg.len() - 10] {
        let err = analyse(&jpeg[..kept]).err().unwrap_or_else(|| panic!("{kept} of {} bytes analysed as whole", jpeg.len()));
        assert_eq!(err.code(), "corrupt_image", "{kept} bytes: {err}");
    }
    let err = analyse(b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00avifmif1").expect_err("avif");
    assert_eq!(err.code(), "unsupported_format");
}

#[tokio::test]
async fn the_handler_writes_thumbnails_and_a_typed_result() {
    let event: SqsEvent = sample_event("sqs-process-image-command.json");
    let (jobs, blobs) = (Arc::new(MemoryJobStore::default()), Arc::new(MemoryBlobStore::default()));
    let id: JobId = "0196f0a0-0000-7000-8000-00000000a11a".parse().expect("id");
    let upload: S3Uri = format!("s3://prism-dev-000000000000-uploads/uploads/default/{id}/photo.jpg").parse().expect("uri");
    let job = Job::new(id.clone(), "default".into(), Priority::Normal, upload.clone(), "t".into(), Utc::now());
    jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
    blobs.insert(&upload, encoded(&DynamicImage::ImageRgb8(picture(2000, 1000)), ImageFormat::Jpeg));
    let deps = memory_deps(jobs.clone(), blobs.clone(), Config { max_bytes: 50 * 1024 * 1024, limits: ImageLimits::default() });
    let response = handle(&deps, event).await;
    assert!(response.batch_item_failures.is_empty());
    let job = jobs.get(&id).await.expect("get").expect("job");
    assert_eq!(job.status, JobStatus::Completed, "{:?}", job.error);
    let Some(JobResult::Image(result)) = &job.result else { panic!("not an image result: {:?}", job.result) };
    assert_eq!((result.width, result.height), (2000, 1000));
    let names: Vec<&str> = job.outputs.iter().map(|o| o.uri.key.as_str()).collect();
    assert_eq!(names, vec![format!("outputs/{id}/thumbnail-1024.jpg"), format!("outputs/{id}/thumbnail-256.jpg")]);
    let (body, content_type) = blobs.object(&job.outputs[1].uri).expect("written");
    assert_eq!(content_type, "image/jpeg");
    assert_eq!(image::load_from_memory(&body).expect("decodes").width(), 256);
    let events = jobs.events(&id, 0, 100).await.expect("events");
    let mut phases: Vec<String> =
        events.iter().filter_map(|e| serde_json::to_value(&e.body).ok()?["payload"]["phase"].as_str().map(str::to_owned)).collect();
    phases.dedup();
    assert_eq!(phases, vec!["reading", "decoding", "writing thumbnails"], "progress while decoding is reported as decoding");

    // The huge header fails the job at once, without decoding.
    let huge: JobId = "0196f0a0-0000-7000-8000-00000000b16b".parse().expect("id");
    let upload: S3Uri = format!("s3://prism-dev-000000000000-uploads/uploads/default/{huge}/huge.png").parse().expect("uri");
    let job = Job::new(huge.clone(), "default".into(), Priority::Normal, upload.clone(), "t".into(), Utc::now());
    jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
    blobs.insert(&upload, huge_png_header());
    let mut event: SqsEvent = sample_event("sqs-process-image-command.json");
    let body = event.records[0].body.clone().expect("body").replace(id.as_str(), huge.as_str()).replace("photo.jpg", "huge.png");
    event.records[0].body = Some(body);
    assert!(handle(&deps, event).await.batch_item_failures.is_empty());
    let job = jobs.get(&huge).await.expect("get").expect("job");
    assert_eq!((job.status, job.error.map(|e| e.code)), (JobStatus::Failed, Some("too_many_pixels".into())));
}

/// A batch of images is taken together: each small one completes, and one
/// with too many pixels fails alone without holding up the others.
#[tokio::test]
async fn a_batch_of_images_completes_each_and_fails_only_the_one_with_too_many_pixels() {
    let template: SqsEvent = sample_event("sqs-process-image-command.json");
    let sample_id = "0196f0a0-0000-7000-8000-00000000a11a";
    let (jobs, blobs) = (Arc::new(MemoryJobStore::default()), Arc::new(MemoryBlobStore::default()));
    let mut event = SqsEvent::default();
    let mut ids = Vec::new();
    for i in 0..5u32 {
        let id: JobId = format!("0196f0a0-0000-7000-8000-0000000000{i:02}").parse().expect("id");
        let name = if i == 2 { "huge.png" } else { "photo.jpg" };
        let upload: S3Uri = format!("s3://prism-dev-000000000000-uploads/uploads/default/{id}/{name}").parse().expect("uri");
        let job = Job::new(id.clone(), "default".into(), Priority::Normal, upload.clone(), "t".into(), Utc::now());
        jobs.create(&job, &[JobEventEnvelope::for_job("test", &job, job.created_event())]).await.expect("create");
        let bytes = if i == 2 { huge_png_header() } else { encoded(&DynamicImage::ImageRgb8(picture(300 + i, 200)), ImageFormat::Jpeg) };
        blobs.insert(&upload, bytes);
        let mut record = template.records[0].clone();
        record.message_id = Some(format!("message-{i}"));
        record.body = record.body.map(|b| b.replace(sample_id, id.as_str()).replace("photo.jpg", name));
        event.records.push(record);
        ids.push(id);
    }
    let deps = memory_deps(jobs.clone(), blobs.clone(), Config { max_bytes: 50 * 1024 * 1024, limits: ImageLimits::default() });
    assert!(handle(&deps, event).await.batch_item_failures.is_empty());
    for (i, id) in ids.iter().enumerate() {
        let job = jobs.get(id).await.expect("get").expect("job");
        if i == 2 {
            assert_eq!((job.status, job.error.map(|e| e.code)), (JobStatus::Failed, Some("too_many_pixels".into())));
        } else {
            assert_eq!(job.status, JobStatus::Completed, "image {i}: {:?}", job.error);
            let Some(JobResult::Image(result)) = &job.result else { panic!("not an image result: {:?}", job.result) };
            assert_eq!(result.width, 300 + i as u32, "each job has its own image");
        }
    }
}

#[test]
fn large_jpegs_shrink_on_load_but_report_and_size_from_the_full_image() {
    let jpeg = encoded(&DynamicImage::ImageRgb8(picture(4100, 2050)), ImageFormat::Jpeg);
    let analysed = analyse(&jpeg).expect("analyse");
    let r = &analysed.result;
    assert_eq!((r.width, r.height, r.display_width, r.display_height), (4100, 2050, 4100, 2050));
    let sizes: Vec<(u32, u32)> = analysed.thumbnails.iter().map(|t| (t.meta.width, t.meta.height)).collect();
    assert_eq!(sizes, vec![(1024, 512), (256, 128)]);
    let one = process_image::analysis::thumbnail(&jpeg, &ImageLimits::default(), 256).expect("thumbnail");
    let decoded = image::load_from_memory(&one.bytes).expect("decodes");
    assert_eq!((decoded.width(), decoded.height()), (256, 128));
    // The palette is the picture's, whatever size the JPEG was decoded at.
    assert!(near(&r.palette[0].hex, RED_BAND, 8), "the red band comes first: {:?}", r.palette);
}

/// `png` with an `eXIf` chunk (the TIFF block of [`exif_app1`]) right after its header.
fn png_with_exif(png: &[u8]) -> Vec<u8> {
    let app1 = exif_app1();
    let tiff = &app1[10..];
    let mut chunk = b"eXIf".to_vec();
    chunk.extend(tiff);
    let mut out = png[..33].to_vec();
    out.extend(u32::try_from(tiff.len()).expect("len").to_be_bytes());
    out.extend(&chunk);
    out.extend(crc32(&chunk).to_be_bytes());
    out.extend(&png[33..]);
    out
}

/// `picture` as an indexed PNG (a palette of its distinct colours, 8 bits).
fn palette_png(width: u32, height: u32) -> Vec<u8> {
    let rgb = DynamicImage::ImageRgb8(picture(width, height)).resize_exact(width, height, image::imageops::FilterType::Nearest);
    let quantised = RgbImage::from_fn(width, height, |x, y| {
        let p = rgb.as_rgb8().expect("rgb").get_pixel(x, y).0;
        Rgb([p[0] & 0xF0, p[1] & 0xF0, p[2] & 0xF0])
    });
    let mut palette: Vec<[u8; 3]> = Vec::new();
    let indices: Vec<u8> = quantised
        .pixels()
        .map(|p| {
            let at = palette.iter().position(|c| *c == p.0).unwrap_or_else(|| {
                palette.push(p.0);
                palette.len() - 1
            });
            u8::try_from(at).expect("at most 256 colours")
        })
        .collect();
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(palette.concat());
    encoder.write_header().expect("header").write_image_data(&indices).expect("pixels");
    out
}

/// Mean absolute difference per channel of two RGB pictures of one size.
fn mean_difference(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let total: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    total as f64 / a.as_raw().len() as f64
}

/// `bytes` (a 1200x800 picture) analysed with the colour type
/// and alpha a full decode reports, and thumbnailed at 256 px to nearly the
/// picture a full decode resized in one go makes (colour only: alpha
/// thumbnails are lossless WebP, opaque ones JPEG).
fn assert_shrinks_like_a_full_decode(name: &str, bytes: &[u8]) {
    let full = image::load_from_memory(bytes).expect("decodes");
    let analysed = analyse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(analysed.result.color_type, format!("{:?}", full.color()).to_lowercase(), "{name}");
    assert_eq!(analysed.result.has_alpha, full.color().has_alpha(), "{name}");
    let thumb = process_image::analysis::thumbnail(bytes, &ImageLimits::default(), 256).expect("thumbnail");
    let ours = image::load_from_memory(&thumb.bytes).expect("thumbnail decodes").to_rgb8();
    assert_eq!(ours.dimensions(), (256, 171), "{name}");
    let reference = full.resize_exact(256, 171, image::imageops::FilterType::Lanczos3).to_rgb8();
    let difference = mean_difference(&ours, &reference);
    assert!(difference < 4.0, "{name}: mean difference {difference:.2} from a full decode's thumbnail");
}

#[test]
fn pngs_of_every_colour_type_shrink_on_load_to_the_thumbnail_a_full_decode_makes() {
    let (width, height) = (1200, 800);
    let base = DynamicImage::ImageRgb8(picture(width, height));
    let opaque = |img: DynamicImage| encoded(&img, ImageFormat::Png);
    let translucent = RgbaImage::from_fn(width, height, |x, y| {
        let p = base.as_rgb8().expect("rgb").get_pixel(x, y).0;
        Rgba([p[0], p[1], p[2], 255 - (x * 128 / width) as u8])
    });
    let cases = [
        ("rgb8", opaque(base.clone())),
        ("rgb16", opaque(DynamicImage::ImageRgb16(base.to_rgb16()))),
        ("l8", opaque(DynamicImage::ImageLuma8(base.to_luma8()))),
        ("l16", opaque(DynamicImage::ImageLuma16(base.to_luma16()))),
        ("la8", opaque(DynamicImage::ImageLumaA8(DynamicImage::ImageRgba8(translucent.clone()).to_luma_alpha8()))),
        ("rgba8", opaque(DynamicImage::ImageRgba8(translucent.clone()))),
        ("rgba16", opaque(DynamicImage::ImageRgba16(DynamicImage::ImageRgba8(translucent).to_rgba16()))),
        ("indexed", palette_png(width, height)),
    ];
    for (name, png) in cases {
        assert_shrinks_like_a_full_decode(name, &png);
    }
}

#[test]
fn a_png_turned_by_its_exif_is_shrunk_upright_and_a_truncated_one_is_corrupt() {
    let png = encoded(&DynamicImage::ImageRgb8(picture(1500, 1000)), ImageFormat::Png);
    let turned = png_with_exif(&png);
    let analysed = analyse(&turned).expect("analyse");
    let r = &analysed.result;
    assert_eq!((r.width, r.height, r.display_width, r.display_height), (1500, 1000, 1000, 1500));
    let sizes: Vec<(u32, u32)> = analysed.thumbnails.iter().map(|t| (t.meta.width, t.meta.height)).collect();
    assert_eq!(sizes, vec![(683, 1024), (171, 256)]);
    let err = analyse(&png[..png.len() / 2]).expect_err("half a PNG");
    assert_eq!(err.code(), "corrupt_image", "{err}");
}

#[test]
fn webps_shrink_on_load_through_libwebp_to_the_thumbnail_a_full_decode_makes() {
    let fixture =
        |name: &str| std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).expect(name);
    let translucent = RgbaImage::from_fn(1200, 800, |x, y| Rgba([(x % 256) as u8, 90, (y % 256) as u8, 255 - (x * 128 / 1200) as u8]));
    let cases = [
        ("lossy", fixture("lossy.webp")),
        ("lossy with alpha", fixture("lossy-alpha.webp")),
        ("lossless", encoded(&DynamicImage::ImageRgb8(picture(1200, 800)), ImageFormat::WebP)),
        ("lossless with alpha", encoded(&DynamicImage::ImageRgba8(translucent), ImageFormat::WebP)),
    ];
    for (name, webp) in cases {
        assert_shrinks_like_a_full_decode(name, &webp);
        let err = analyse(&webp[..webp.len() / 2]).expect_err("half a WebP");
        assert_eq!(err.code(), "corrupt_image", "{name}: {err}");
    }
}

#[test]
fn tiffs_in_strips_shrink_on_load_to_the_thumbnail_a_full_decode_makes() {
    let base = DynamicImage::ImageRgb8(picture(1200, 800));
    let translucent = DynamicImage::ImageRgba8(RgbaImage::from_fn(1200, 800, |x, y| {
        let p = base.as_rgb8().expect("rgb").get_pixel(x, y).0;
        Rgba([p[0], p[1], p[2], 255 - (x * 128 / 1200) as u8])
    }));
    let cases = [
        ("rgb8", base.clone()),
        ("rgb16", DynamicImage::ImageRgb16(base.to_rgb16())),
        ("l8", DynamicImage::ImageLuma8(base.to_luma8())),
        ("l16", DynamicImage::ImageLuma16(base.to_luma16())),
        ("rgba8", translucent.clone()),
        ("rgba16", DynamicImage::ImageRgba16(translucent.to_rgba16())),
    ];
    for (name, img) in cases {
        let tiff = encoded(&img, ImageFormat::Tiff);
        assert_shrinks_like_a_full_decode(name, &tiff);
        let err = analyse(&tiff[..tiff.len() / 2]).expect_err("half a TIFF");
        assert_eq!(err.code(), "corrupt_image", "{name}: {err}");
    }
}
