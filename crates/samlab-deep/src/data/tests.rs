use super::*;

fn tiny(n: usize, classes: usize) -> ImageSet {
    ImageSet {
        pixels: (0..n * 4).map(|i| i as u8).collect(),
        labels: (0..n).map(|i| (i % classes) as u16).collect(),
        shape: [1, 2, 2],
        classes,
    }
}

fn idx_bytes(
    n: usize,
    rows: usize,
    cols: usize,
    pixel: impl Fn(usize) -> u8,
) -> (Vec<u8>, Vec<u8>) {
    let mut images = Vec::new();
    for v in [2051u32, n as u32, rows as u32, cols as u32] {
        images.extend(v.to_be_bytes());
    }
    images.extend((0..n * rows * cols).map(&pixel));
    let mut labels = Vec::new();
    for v in [2049u32, n as u32] {
        labels.extend(v.to_be_bytes());
    }
    labels.extend((0..n).map(|i| (i % 10) as u8));
    (images, labels)
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn idx_loader_reads_gz_and_raw_files_and_rejects_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (ti, tl) = idx_bytes(5, 3, 4, |i| (i * 7 % 256) as u8);
    let (si, sl) = idx_bytes(2, 3, 4, |i| i as u8);
    fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gz(&ti)).unwrap();
    fs::write(dir.path().join("train-labels-idx1-ubyte"), &tl).unwrap();
    fs::write(dir.path().join("t10k-images-idx3-ubyte"), &si).unwrap();
    fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), gz(&sl)).unwrap();
    let (train, test) = DatasetKind::FashionMnist.load(Some(dir.path())).unwrap();
    assert_eq!((train.len(), train.shape, test.len()), (5, [1, 3, 4], 2));
    assert_eq!(
        train.image(1),
        (12..24)
            .map(|i| (i * 7 % 256) as u8)
            .collect::<Vec<_>>()
            .as_slice()
    );
    assert_eq!(train.labels, [0, 1, 2, 3, 4]);

    // Truncated image file: the message names the file and the problem.
    fs::write(
        dir.path().join("t10k-images-idx3-ubyte"),
        &si[..si.len() - 1],
    )
    .unwrap();
    let err = load_idx_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("t10k-images-idx3-ubyte") && err.contains("truncated"),
        "{err}"
    );
    // A missing file.
    fs::remove_file(dir.path().join("t10k-images-idx3-ubyte")).unwrap();
    let err = load_idx_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("t10k-images-idx3-ubyte.gz") && err.contains("missing"),
        "{err}"
    );
    // A cut gzip stream.
    let cut = gz(&si);
    fs::write(
        dir.path().join("t10k-images-idx3-ubyte.gz"),
        &cut[..cut.len() / 2],
    )
    .unwrap();
    let err = load_idx_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("gzip"), "{err}");
    // Labels and images that disagree.
    fs::write(dir.path().join("t10k-images-idx3-ubyte.gz"), gz(&si)).unwrap();
    fs::write(dir.path().join("t10k-labels-idx1-ubyte.gz"), gz(&tl)).unwrap();
    let err = load_idx_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("5 labels for 2 images"), "{err}");
}

#[test]
fn idx_sizes_are_never_taken_on_trust() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x-images-idx3-ubyte.gz");
    let (images, _) = idx_bytes(3, 2, 2, |i| i as u8);
    // Two gzip members (e.g. files concatenated with cat) are one valid stream.
    let (a, b) = images.split_at(10);
    fs::write(&path, [gz(a), gz(b)].concat()).unwrap();
    assert_eq!(read_idx(&path).unwrap(), images);
    // A header whose dimensions overflow 64 bits.
    let mut huge = images.clone();
    huge[4..16].copy_from_slice(&[0xff; 12]);
    fs::write(&path, gz(&huge)).unwrap();
    let err = read_idx(&path).unwrap_err().to_string();
    assert!(err.contains("overflow"), "{err}");
    // A small file that inflates far beyond its header's size: decompression stops one byte past it.
    let mut bomb = images.clone();
    bomb.extend(std::iter::repeat_n(0u8, 50_000_000));
    let packed = gz(&bomb);
    assert!(packed.len() < 300_000, "{}", packed.len());
    fs::write(&path, &packed).unwrap();
    let err = read_idx(&path).unwrap_err().to_string();
    assert!(err.contains("more bytes than the header"), "{err}");
    // Uncompressed: the header is checked against the file length before reading.
    let raw = dir.path().join("x-images-idx3-ubyte");
    let mut claims = images.clone();
    claims[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
    fs::write(&raw, &claims).unwrap();
    let err = read_idx(&raw).unwrap_err().to_string();
    assert!(
        err.contains("4000016 bytes") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn cifar_loaders_read_records_and_reject_truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let record = |label: u8, fill: u8| {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(fill, 3072));
        r
    };
    for i in 1..=5u8 {
        let bytes: Vec<u8> = [record(i, i * 10), record(9, 1)].concat();
        fs::write(dir.path().join(format!("data_batch_{i}.bin")), bytes).unwrap();
    }
    fs::write(dir.path().join("test_batch.bin"), record(3, 200)).unwrap();
    let (train, test) = DatasetKind::Cifar10.load(Some(dir.path())).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!(train.labels, [1, 9, 2, 9, 3, 9, 4, 9, 5, 9]);
    assert_eq!(train.image(2)[3071], 20);
    assert_eq!((test.labels[0], test.image(0)[0]), (3, 200));
    fs::write(dir.path().join("data_batch_3.bin"), &record(1, 1)[..3000]).unwrap();
    let err = DatasetKind::Cifar10
        .load(Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data_batch_3.bin") && err.contains("truncated"),
        "{err}"
    );
    fs::write(dir.path().join("data_batch_3.bin"), record(10, 1)).unwrap();
    let err = DatasetKind::Cifar10
        .load(Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 10"), "{err}");

    // CIFAR-100 in its conventional subdirectory: the fine label (second byte) is the class.
    let sub = dir.path().join("cifar-100-binary");
    fs::create_dir(&sub).unwrap();
    let rec100 = |coarse: u8, fine: u8| [vec![coarse, fine], vec![7; 3072]].concat();
    fs::write(
        sub.join("train.bin"),
        [rec100(1, 42), rec100(2, 99)].concat(),
    )
    .unwrap();
    fs::write(sub.join("test.bin"), rec100(0, 5)).unwrap();
    let (train, test) = DatasetKind::Cifar100.load(Some(dir.path())).unwrap();
    assert_eq!(
        (train.labels.clone(), test.labels.clone(), train.classes),
        (vec![42, 99], vec![5], 100)
    );
    let err = DatasetKind::Cifar100
        .load(Some(&dir.path().join("nope")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("train.bin"), "{err}");
}

#[test]
fn shipped_subset_has_the_documented_size_and_classes() {
    let (train, test) = shipped_fashion_mnist().unwrap();
    assert_eq!(
        (train.len(), test.len(), train.shape),
        (10_000, 2_000, [1, 28, 28])
    );
    let mut counts = [0usize; 10];
    train.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(
        counts,
        [942, 1027, 1016, 1019, 974, 989, 1021, 1022, 990, 1000]
    );
}

#[test]
fn validation_split_is_seeded_disjoint_and_complete() {
    let full = tiny(50, 10);
    let (train, val, idx) = split_validation(&full, 0.1, 3).unwrap();
    assert_eq!((train.len(), val.len()), (45, 5));
    let (_, val2, idx2) = split_validation(&full, 0.1, 3).unwrap();
    assert_eq!((val.clone(), idx.clone()), (val2, idx2));
    let (_, val3, _) = split_validation(&full, 0.1, 4).unwrap();
    assert_ne!(val, val3);
    // Every image is in exactly one split (pixels identify images here).
    let mut firsts: Vec<u8> = (0..train.len())
        .map(|i| train.image(i)[0])
        .chain((0..val.len()).map(|i| val.image(i)[0]))
        .collect();
    firsts.sort_unstable();
    assert_eq!(firsts, (0..50).map(|i| (i * 4) as u8).collect::<Vec<_>>());
    assert_eq!(train.image(7), full.image(idx[7]));
    assert!(split_validation(&full, 1.0, 0).is_err());
}

#[test]
fn label_noise_flips_exactly_the_requested_fraction_to_a_different_class() {
    for (n, fraction, classes) in [(1000, 0.6, 10), (997, 0.25, 3), (50, 1.0, 2), (40, 0.0, 10)] {
        let clean = tiny(n, classes);
        let mut noisy = clean.clone();
        let noise = LabelNoise {
            fraction,
            kind: NoiseKind::Symmetric,
        };
        let idx = apply_label_noise(&mut noisy, &noise, DatasetKind::Mnist, 1, 0).unwrap();
        let changed: Vec<usize> = (0..n)
            .filter(|&i| noisy.labels[i] != clean.labels[i])
            .collect();
        assert_eq!(
            changed, idx,
            "the recorded indices are exactly the changed labels"
        );
        assert_eq!(idx.len(), (fraction * n as f64).floor() as usize);
        assert!(noisy.labels.iter().all(|&l| (l as usize) < classes));
    }
    // Symmetric noise spreads over the K - 1 wrong classes (roughly uniformly).
    let clean = ImageSet {
        labels: vec![0; 9000],
        pixels: vec![0; 9000 * 4],
        ..tiny(1, 10)
    };
    let mut noisy = clean.clone();
    apply_label_noise(
        &mut noisy,
        &LabelNoise {
            fraction: 1.0,
            kind: NoiseKind::Symmetric,
        },
        DatasetKind::Mnist,
        2,
        0,
    )
    .unwrap();
    let mut counts = [0usize; 10];
    noisy.labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts[0], 0);
    assert!(
        counts[1..].iter().all(|&c| (900..1100).contains(&c)),
        "{counts:?}"
    );
    // Asymmetric CIFAR-10 noise follows the map and only touches classes the map changes.
    let clean = tiny(1000, 10);
    let mut noisy = clean.clone();
    let asym = LabelNoise {
        fraction: 0.3,
        kind: NoiseKind::Asymmetric,
    };
    let idx = apply_label_noise(&mut noisy, &asym, DatasetKind::Cifar10, 5, 0).unwrap();
    assert_eq!(idx.len(), 300);
    for &i in &idx {
        let y = clean.labels[i];
        assert_eq!(
            noisy.labels[i],
            asymmetric_target(DatasetKind::Cifar10, y, 10)
        );
        assert_ne!(noisy.labels[i], y);
    }
    // Half the CIFAR-10 classes are fixed points of the map: 60% cannot be reached.
    let err = apply_label_noise(
        &mut clean.clone(),
        &LabelNoise {
            fraction: 0.6,
            ..asym
        },
        DatasetKind::Cifar10,
        5,
        0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("only 500 of 1000"), "{err}");
}

#[test]
fn augmentation_crops_with_zero_padding_and_flips() {
    // One 1x3x3 image with pixels 1..9 (scaled by 1/255).
    let set = ImageSet {
        pixels: (1..=9).collect(),
        labels: vec![0],
        shape: [1, 3, 3],
        classes: 2,
    };
    let mut dst = vec![0.0; 9];
    let px = |v: &[f32]| {
        v.iter()
            .map(|x| (x * 255.0).round() as u8)
            .collect::<Vec<_>>()
    };
    write_image(set.image(0), set.shape, 1, 0, 0, false, &mut dst);
    assert_eq!(px(&dst), [0, 0, 0, 0, 1, 2, 0, 4, 5]);
    write_image(set.image(0), set.shape, 1, 2, 1, false, &mut dst);
    assert_eq!(px(&dst), [4, 5, 6, 7, 8, 9, 0, 0, 0]);
    write_image(set.image(0), set.shape, 1, 1, 1, true, &mut dst);
    assert_eq!(px(&dst), [3, 2, 1, 6, 5, 4, 9, 8, 7]);
    // Over many draws every offset and both flips occur; without augmentation the image is unchanged.
    let mut s = Stream::new(0, Purpose::Augment, 0, 0);
    let many: Vec<usize> = vec![0; 400];
    let (out, labels) = assemble(
        &set,
        &set.labels,
        &many,
        Augment::CropFlip { pad: 1 },
        &mut s,
    );
    assert_eq!(labels.len(), 400);
    let distinct: std::collections::BTreeSet<Vec<u8>> = out.chunks(9).map(px).collect();
    assert_eq!(distinct.len(), 18, "9 crops x 2 flips");
    let (out, _) = assemble(&set, &set.labels, &[0], Augment::None, &mut s);
    assert_eq!(px(&out), (1..=9).collect::<Vec<u8>>());
}
