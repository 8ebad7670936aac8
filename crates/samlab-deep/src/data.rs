//! Image data sets: CIFAR-10/100 binary and MNIST/Fashion-MNIST IDX loaders, the shipped Fashion-MNIST subset,
//! the seeded validation split, label noise and augmentation.
//!
//! Nothing is downloaded. Images are kept as bytes (`[n, c, h, w]`, row-major) and scaled to [0, 1] when a batch
//! is assembled, with no mean/std normalization (as in the authors' code).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use samlab_core::{ConfigError, DataError};
use serde::{Deserialize, Serialize};

use crate::rng::{Purpose, Stream};

/// The supported data sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// CIFAR-10, binary version (`data_batch_{1..5}.bin`, `test_batch.bin`).
    Cifar10,
    /// CIFAR-100, binary version (`train.bin`, `test.bin`; fine labels).
    Cifar100,
    /// MNIST, IDX files (optionally gzipped).
    Mnist,
    /// Fashion-MNIST, IDX files (optionally gzipped); the shipped subset without a data directory.
    FashionMnist,
}

impl DatasetKind {
    /// Every data set with its command-line name.
    pub const ALL: [(&'static str, DatasetKind); 4] = [
        ("cifar10", DatasetKind::Cifar10),
        ("cifar100", DatasetKind::Cifar100),
        ("mnist", DatasetKind::Mnist),
        ("fashion-mnist", DatasetKind::FashionMnist),
    ];

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, k)| k)
            .ok_or_else(|| ConfigError::Invalid {
                field: "dataset",
                reason: format!(
                    "unknown dataset {name:?}; expected one of {}",
                    Self::ALL.map(|(n, _)| n).join(", ")
                ),
            })
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).unwrap().0
    }

    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            DatasetKind::Cifar100 => 100,
            _ => 10,
        }
    }

    /// The augmentation the paper uses for this data set (crop + flip for CIFAR, none for the MNIST family,
    /// where crops made small nets underfit at laptop budgets; see notes/laptop-scale-deep.md).
    pub fn default_augment(self) -> Augment {
        match self {
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Augment::CropFlip { pad: 4 },
            _ => Augment::None,
        }
    }

    /// Loads the training and test sets from `dir`; without a directory, the shipped Fashion-MNIST subset.
    pub fn load(self, dir: Option<&Path>) -> Result<(ImageSet, ImageSet), DataError> {
        match (self, dir) {
            (DatasetKind::Cifar10, Some(d)) => load_cifar(d, false),
            (DatasetKind::Cifar100, Some(d)) => load_cifar(d, true),
            (DatasetKind::Mnist | DatasetKind::FashionMnist, Some(d)) => load_idx_dir(d),
            (DatasetKind::FashionMnist, None) => shipped_fashion_mnist(),
            (kind, None) => Err(DataError::Read {
                path: PathBuf::from("--data-dir"),
                reason: format!(
                    "{} is not shipped with samlab: pass --data-dir with its files",
                    kind.name()
                ),
            }),
        }
    }
}

/// A set of images with labels.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Pixels, `[n, c, h, w]` row-major, 0..=255.
    pub pixels: Vec<u8>,
    /// Labels in `0..classes`.
    pub labels: Vec<u16>,
    /// `[c, h, w]`.
    pub shape: [usize; 3],
    /// Number of classes.
    pub classes: usize,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Scalars per image.
    pub fn image_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_size();
        &self.pixels[i * s..(i + 1) * s]
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_size());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            shape: self.shape,
            classes: self.classes,
        }
    }
}

fn read_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Read {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads an IDX file (gunzipped when its name ends in `.gz`; any number of gzip members), never more than its
/// header announces: the dimensions are multiplied with overflow checks, an uncompressed file must be exactly as
/// long as its header says, and decompression stops one byte past the announced size, so a small file that
/// inflates to gigabytes is rejected after reading only what the header allows.
fn read_idx(path: &Path) -> Result<Vec<u8>, DataError> {
    let file = fs::File::open(path).map_err(|e| read_err(path, e.to_string()))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let decoder = flate2::read::MultiGzDecoder::new(io::BufReader::new(file));
        read_idx_from(decoder, path, None)
    } else {
        let len = file
            .metadata()
            .map_err(|e| read_err(path, e.to_string()))?
            .len();
        read_idx_from(file, path, Some(len))
    }
}

/// `read_idx` of a file's bytes already in memory (gunzipped when `gzip`); `path` only names it in errors.
/// Its result is what [`parse_idx`] takes.
pub fn read_idx_bytes(bytes: &[u8], gzip: bool, path: &Path) -> Result<Vec<u8>, DataError> {
    if gzip {
        read_idx_from(flate2::read::MultiGzDecoder::new(bytes), path, None)
    } else {
        read_idx_from(bytes, path, Some(bytes.len() as u64))
    }
}

/// [`read_idx`] from any reader; `len` is the length of the (uncompressed) stream when known beforehand.
fn read_idx_from(mut r: impl Read, path: &Path, len: Option<u64>) -> Result<Vec<u8>, DataError> {
    let io = |e: io::Error| match len {
        None => read_err(path, format!("not a valid gzip stream ({e}); truncated?")),
        Some(_) => read_err(
            path,
            format!("not an IDX file: shorter than its header ({e})"),
        ),
    };
    let mut out = vec![0u8; 4];
    r.read_exact(&mut out).map_err(io)?;
    if out[..2] != [0, 0] || out[2] != 8 || !(1..=4).contains(&out[3]) {
        return Err(read_err(
            path,
            "not an IDX file of unsigned bytes (magic 0x0000 08 0N expected)",
        ));
    }
    let dims = usize::from(out[3]);
    out.resize(4 + 4 * dims, 0);
    r.read_exact(&mut out[4..]).map_err(io)?;
    let sizes: Vec<u64> = out[4..].chunks_exact(4).map(|b| be_u32(b) as u64).collect();
    let total = sizes
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|body| body.checked_add(out.len() as u64))
        .ok_or_else(|| read_err(path, format!("its header dimensions {sizes:?} overflow")))?;
    if let Some(len) = len.filter(|&l| l != total) {
        return Err(read_err(
            path,
            format!("{len} bytes, but the header announces dimensions {sizes:?} ({total} bytes); truncated?"),
        ));
    }
    r.take(total - out.len() as u64 + 1)
        .read_to_end(&mut out)
        .map_err(io)?;
    if out.len() as u64 != total {
        let what = if (out.len() as u64) < total {
            "fewer"
        } else {
            "more"
        };
        return Err(read_err(
            path,
            format!("{what} bytes than the header's dimensions {sizes:?} announce ({total}); truncated or corrupt?"),
        ));
    }
    Ok(out)
}

fn check_labels(path: &Path, labels: &[u16], classes: usize) -> Result<(), DataError> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(i) => Err(read_err(
            path,
            format!("label {} of record {i} is not below {classes}", labels[i]),
        )),
        None => Ok(()),
    }
}

/// Reads and parses one CIFAR binary file (see [`parse_cifar`]).
fn read_cifar(path: &Path, hundred: bool) -> Result<ImageSet, DataError> {
    let raw = fs::read(path).map_err(|e| read_err(path, e.to_string()))?;
    parse_cifar(&raw, path, hundred)
}

/// Parses the bytes of one CIFAR binary file: records of 1 (CIFAR-10) or 2 (CIFAR-100, `hundred`) label bytes
/// then 3072 pixel bytes; the last label byte is the class (CIFAR-100: fine label). `path` names it in errors.
pub fn parse_cifar(raw: &[u8], path: &Path, hundred: bool) -> Result<ImageSet, DataError> {
    let (label_bytes, classes) = if hundred { (2, 100) } else { (1, 10) };
    let record = label_bytes + 3072;
    if raw.is_empty() || !raw.len().is_multiple_of(record) {
        return Err(read_err(
            path,
            format!(
                "{} bytes is not a whole number of {record}-byte records; truncated or not CIFAR binary",
                raw.len()
            ),
        ));
    }
    let n = raw.len() / record;
    let mut set = ImageSet {
        pixels: Vec::with_capacity(n * 3072),
        labels: Vec::with_capacity(n),
        shape: [3, 32, 32],
        classes,
    };
    for r in raw.chunks_exact(record) {
        set.labels.push(r[label_bytes - 1] as u16);
        set.pixels.extend_from_slice(&r[label_bytes..]);
    }
    check_labels(path, &set.labels, classes)?;
    Ok(set)
}

fn concat(sets: Vec<ImageSet>) -> ImageSet {
    let mut out = ImageSet {
        pixels: Vec::new(),
        labels: Vec::new(),
        shape: sets[0].shape,
        classes: sets[0].classes,
    };
    for s in sets {
        out.pixels.extend(s.pixels);
        out.labels.extend(s.labels);
    }
    out
}

/// Finds `names` in `dir` or in its conventional subdirectory `sub`.
fn locate(dir: &Path, sub: &str, first: &str) -> PathBuf {
    if !dir.join(first).exists() && dir.join(sub).join(first).exists() {
        dir.join(sub)
    } else {
        dir.to_path_buf()
    }
}

/// CIFAR-10 (`data_batch_1.bin`..`data_batch_5.bin`, `test_batch.bin`) or CIFAR-100 (`train.bin`, `test.bin`),
/// in `dir` or in `dir/cifar-10-batches-bin` / `dir/cifar-100-binary`.
pub fn load_cifar(dir: &Path, hundred: bool) -> Result<(ImageSet, ImageSet), DataError> {
    if hundred {
        let dir = locate(dir, "cifar-100-binary", "train.bin");
        Ok((
            read_cifar(&dir.join("train.bin"), true)?,
            read_cifar(&dir.join("test.bin"), true)?,
        ))
    } else {
        let dir = locate(dir, "cifar-10-batches-bin", "data_batch_1.bin");
        let train = (1..=5)
            .map(|i| read_cifar(&dir.join(format!("data_batch_{i}.bin")), false))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            concat(train),
            read_cifar(&dir.join("test_batch.bin"), false)?,
        ))
    }
}

fn be_u32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// Parses an IDX image file (magic 2051) and its label file (magic 2049).
pub fn parse_idx(
    images: &[u8],
    labels: &[u8],
    image_path: &Path,
    label_path: &Path,
) -> Result<ImageSet, DataError> {
    if images.len() < 16 || be_u32(images) != 2051 {
        return Err(read_err(
            image_path,
            "not an IDX image file (magic 2051 expected)",
        ));
    }
    if labels.len() < 8 || be_u32(labels) != 2049 {
        return Err(read_err(
            label_path,
            "not an IDX label file (magic 2049 expected)",
        ));
    }
    let (n, rows, cols) = (
        be_u32(&images[4..]),
        be_u32(&images[8..]),
        be_u32(&images[12..]),
    );
    let expected = n
        .checked_mul(rows)
        .and_then(|x| x.checked_mul(cols))
        .and_then(|x| x.checked_add(16));
    if expected != Some(images.len()) {
        return Err(read_err(
            image_path,
            format!(
                "{} bytes, but the header announces {n} images of {rows}x{cols}; truncated?",
                images.len()
            ),
        ));
    }
    let n_labels = be_u32(&labels[4..]);
    if labels.len() != 8 + n_labels {
        return Err(read_err(
            label_path,
            format!(
                "{} bytes, but the header announces {n_labels} labels; truncated?",
                labels.len()
            ),
        ));
    }
    if n_labels != n {
        return Err(read_err(
            label_path,
            format!(
                "{n_labels} labels for {n} images in {}",
                image_path.display()
            ),
        ));
    }
    let set = ImageSet {
        pixels: images[16..].to_vec(),
        labels: labels[8..].iter().map(|&l| l as u16).collect(),
        shape: [1, rows, cols],
        classes: 10,
    };
    check_labels(label_path, &set.labels, 10)?;
    Ok(set)
}

/// The first of `stem`, `stem.gz` (and the `train-images.idx3-ubyte` spelling) that exists in `dir`.
fn find_idx(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    let candidates = [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ];
    candidates
        .iter()
        .map(|c| dir.join(c))
        .find(|p| p.exists())
        .ok_or_else(|| {
            read_err(
                &dir.join(format!("{stem}.gz")),
                "missing (also looked for the uncompressed file)",
            )
        })
}

/// MNIST or Fashion-MNIST from `dir`: `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
pub fn load_idx_dir(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let load = |prefix: &str| -> Result<ImageSet, DataError> {
        let ip = find_idx(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let lp = find_idx(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        parse_idx(&read_idx(&ip)?, &read_idx(&lp)?, &ip, &lp)
    };
    Ok((load("train")?, load("t10k")?))
}

/// The Fashion-MNIST subset shipped in `data/fashion-mnist-subset` (10,000 training and 2,000 test images),
/// compiled into the binary so it works wherever samlab is installed.
pub fn shipped_fashion_mnist() -> Result<(ImageSet, ImageSet), DataError> {
    macro_rules! shipped {
        ($name:literal) => {
            (
                include_bytes!(concat!("../../../data/fashion-mnist-subset/", $name)).as_slice(),
                Path::new(concat!("data/fashion-mnist-subset/", $name)),
            )
        };
    }
    let gunzip = |(bytes, path): (&[u8], &Path)| {
        read_idx_from(flate2::read::MultiGzDecoder::new(bytes), path, None)
    };
    let files = [
        shipped!("train-images-idx3-ubyte.gz"),
        shipped!("train-labels-idx1-ubyte.gz"),
        shipped!("t10k-images-idx3-ubyte.gz"),
        shipped!("t10k-labels-idx1-ubyte.gz"),
    ];
    let [ti, tl, si, sl] = files;
    let train = parse_idx(&gunzip(ti)?, &gunzip(tl)?, ti.1, tl.1)?;
    let test = parse_idx(&gunzip(si)?, &gunzip(sl)?, si.1, sl.1)?;
    Ok((train, test))
}

/// Splits off a seeded validation set: `round(fraction * n)` images chosen by a random permutation of the
/// training set (the authors hold out 5,000 of CIFAR's 50,000). Returns (train, validation, and for each new
/// training image its index in the original training set).
pub fn split_validation(
    full: &ImageSet,
    fraction: f64,
    seed: u64,
) -> Result<(ImageSet, ImageSet, Vec<usize>), ConfigError> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(ConfigError::Invalid {
            field: "val_fraction",
            reason: format!("must be in [0, 1), got {fraction}"),
        });
    }
    let n_val = (fraction * full.len() as f64).round() as usize;
    let perm = Stream::new(seed, Purpose::Split, 0, 0).permutation(full.len());
    let (val_idx, train_idx) = perm.split_at(n_val);
    let mut train_idx = train_idx.to_vec();
    let mut val_idx = val_idx.to_vec();
    train_idx.sort_unstable();
    val_idx.sort_unstable();
    Ok((full.select(&train_idx), full.select(&val_idx), train_idx))
}

/// Symmetric or asymmetric label noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseKind {
    /// A label drawn uniformly from the K - 1 wrong classes.
    Symmetric,
    /// A fixed class map: CIFAR-10 truck->automobile, bird->airplane, cat<->dog, deer->horse (the authors' map);
    /// every other data set `y -> (y + 1) mod K`. Only examples whose class the map changes are eligible.
    Asymmetric,
}

/// Label noise on a split: exactly `floor(fraction * n)` examples get a different label.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelNoise {
    /// Fraction of the split whose labels are changed, in [0, 1].
    pub fraction: f64,
    /// How the new label is chosen.
    pub kind: NoiseKind,
}

/// The asymmetric target of class `y`.
pub fn asymmetric_target(dataset: DatasetKind, y: u16, classes: usize) -> u16 {
    match dataset {
        DatasetKind::Cifar10 => match y {
            9 => 1,
            2 => 0,
            3 => 5,
            5 => 3,
            4 => 7,
            other => other,
        },
        _ => ((y as usize + 1) % classes) as u16,
    }
}

/// Applies `noise` to `set` (split `split`: 0 train, 1 validation) and returns the noisy indices, sorted.
///
/// Eligible examples (all for symmetric noise; those whose class the map changes for asymmetric noise) are put in
/// a seeded random order and the first `floor(fraction * n)` get a new label, always different from the old one.
pub fn apply_label_noise(
    set: &mut ImageSet,
    noise: &LabelNoise,
    dataset: DatasetKind,
    seed: u64,
    split: u64,
) -> Result<Vec<usize>, ConfigError> {
    if !(0.0..=1.0).contains(&noise.fraction) {
        return Err(ConfigError::Invalid {
            field: "label_noise.fraction",
            reason: format!("must be in [0, 1], got {}", noise.fraction),
        });
    }
    let k = set.classes;
    let count = (noise.fraction * set.len() as f64).floor() as usize;
    let mut stream = Stream::new(seed, Purpose::LabelNoise, split, 0);
    let eligible: Vec<usize> = stream
        .permutation(set.len())
        .into_iter()
        .filter(|&i| {
            noise.kind == NoiseKind::Symmetric
                || asymmetric_target(dataset, set.labels[i], k) != set.labels[i]
        })
        .collect();
    if eligible.len() < count {
        return Err(ConfigError::Invalid {
            field: "label_noise.fraction",
            reason: format!(
                "asymmetric noise can change only {} of {} labels of {}, fewer than the {count} requested",
                eligible.len(),
                set.len(),
                dataset.name()
            ),
        });
    }
    let mut chosen = eligible[..count].to_vec();
    for &i in &chosen {
        let y = set.labels[i];
        set.labels[i] = match noise.kind {
            NoiseKind::Symmetric => {
                let r = stream.below(k - 1) as u16;
                if r >= y {
                    r + 1
                } else {
                    r
                }
            }
            NoiseKind::Asymmetric => asymmetric_target(dataset, y, k),
        };
    }
    chosen.sort_unstable();
    Ok(chosen)
}

/// Training-time augmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Augment {
    /// None.
    None,
    /// Random crop of the original size from the image zero-padded by `pad` on every side.
    Crop {
        /// Padding in pixels.
        pad: usize,
    },
    /// Random crop as above, then a horizontal flip with probability 1/2 (torchvision's RandomCrop +
    /// RandomHorizontalFlip).
    CropFlip {
        /// Padding in pixels.
        pad: usize,
    },
}

/// Writes image `src` (`[c, h, w]` bytes) into `dst` as floats in [0, 1], cropped at offset `(dy, dx)` of the
/// zero-padded image and mirrored if `flip`.
fn write_image(
    src: &[u8],
    shape: [usize; 3],
    pad: usize,
    dy: usize,
    dx: usize,
    flip: bool,
    dst: &mut [f32],
) {
    let [c, h, w] = shape;
    for ch in 0..c {
        for y in 0..h {
            let sy = (y + dy) as isize - pad as isize;
            for x in 0..w {
                let xo = if flip { w - 1 - x } else { x };
                let sx = (xo + dx) as isize - pad as isize;
                let inside = sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize;
                dst[(ch * h + y) * w + x] = if inside {
                    src[(ch * h + sy as usize) * w + sx as usize] as f32 / 255.0
                } else {
                    0.0
                };
            }
        }
    }
}

/// Assembles the images at `indices` as floats `[n, c, h, w]` in [0, 1], augmented with draws from `stream`
/// (per image: crop offsets, then the flip), and their labels.
pub fn assemble(
    set: &ImageSet,
    labels: &[u16],
    indices: &[usize],
    augment: Augment,
    stream: &mut Stream,
) -> (Vec<f32>, Vec<u16>) {
    let size = set.image_size();
    let mut out = vec![0.0f32; indices.len() * size];
    for (slot, &i) in indices.iter().enumerate() {
        let dst = &mut out[slot * size..(slot + 1) * size];
        let (pad, flip_allowed) = match augment {
            Augment::None => (0, false),
            Augment::Crop { pad } => (pad, false),
            Augment::CropFlip { pad } => (pad, true),
        };
        let (dy, dx) = if pad > 0 {
            (stream.below(2 * pad + 1), stream.below(2 * pad + 1))
        } else {
            (0, 0)
        };
        let flip = flip_allowed && stream.below(2) == 1;
        write_image(set.image(i), set.shape, pad, dy, dx, flip, dst);
    }
    (out, indices.iter().map(|&i| labels[i]).collect())
}

#[cfg(test)]
mod tests;
