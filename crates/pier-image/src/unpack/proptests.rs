//! Property test of the layer unpacker against hostile tars: entries with `..`, absolute paths,
//! symlinks and hard links pointing anywhere, in any order, in both modes. Whatever the tar says,
//! nothing is written outside the destination, and unpacking never panics.

use std::path::Path;

use proptest::prelude::*;

use super::{Compression, UnpackMode, unpack_layer};

#[derive(Clone, Debug)]
enum Kind {
    File,
    Dir,
    Symlink(String),
    Hardlink(String),
}

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("outside".to_owned()),
        Just(".wh.a".to_owned()),
        Just(".wh..wh..opq".to_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), proptest::collection::vec(component(), 1..5)).prop_map(|(abs, parts)| {
        let joined = parts.join("/");
        if abs { format!("/{joined}") } else { joined }
    })
}

fn entry() -> impl Strategy<Value = (String, Kind)> {
    let kind = prop_oneof![
        Just(Kind::File),
        Just(Kind::Dir),
        path().prop_map(Kind::Symlink),
        path().prop_map(Kind::Hardlink),
    ];
    (path(), kind)
}

/// A tar of `entries` written with raw headers, so hostile names go in unchanged.
fn tar_of(entries: &[(String, Kind)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind) in entries {
        let mut h = tar::Header::new_old();
        let bytes = name.as_bytes();
        if bytes.len() >= 100 {
            continue;
        }
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        let (ty, body): (tar::EntryType, &[u8]) = match kind {
            Kind::File => (tar::EntryType::Regular, b"escaped?"),
            Kind::Dir => (tar::EntryType::Directory, b""),
            Kind::Symlink(t) | Kind::Hardlink(t) => {
                let t = t.as_bytes();
                if t.len() >= 100 {
                    continue;
                }
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
                let ty = if matches!(kind, Kind::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                (ty, b"")
            }
        };
        h.set_entry_type(ty);
        h.set_mode(0o755);
        h.set_size(body.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Every path under `root`, relative.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn nothing_lands_outside_the_layer(entries in proptest::collection::vec(entry(), 1..12), overlay in any::<bool>()) {
        let top = tempfile::tempdir().unwrap();
        let dest = top.path().join("layer");
        std::fs::create_dir(&dest).unwrap();
        // Neighbours a `..` would reach, and a file a link could be made to point at.
        std::fs::create_dir(top.path().join("outside")).unwrap();
        std::fs::write(top.path().join("outside/keep"), "keep").unwrap();
        let before: Vec<String> = tree(top.path()).into_iter().filter(|p| !p.starts_with("layer")).collect();
        let mode = if overlay { UnpackMode::Overlay } else { UnpackMode::Flatten };
        let data = tar_of(&entries);
        let _ = unpack_layer(&data[..], Compression::None, &dest, mode);
        let after: Vec<String> = tree(top.path()).into_iter().filter(|p| !p.starts_with("layer")).collect();
        prop_assert_eq!(&before, &after, "written outside the layer: {:?}", entries);
        prop_assert_eq!(std::fs::read_to_string(top.path().join("outside/keep")).unwrap(), "keep");
    }
}
