//! The one list of the files a loader opens in a model folder: what `run`, `serve` and
//! `convert` hand to Python reads these, so health requires each one that is there to be a
//! regular file this user can read ([`super::health`]), and a file that is not on the list is
//! never a reason (a stray name that is not UTF-8, a FIFO named `notes.txt`: a warning).
//!
//! Taken from the loaders installed with mlxfs's runtime (mlx-lm 0.32, transformers 5,
//! mlx-vlm 0.7, mlx-whisper 0.4):
//! - mlx-lm `utils.load_config` / `load_model`: `config.json`, `generation_config.json`,
//!   `hf_quant_config.json`, every `model*.safetensors`; its download patterns add
//!   `tokenizer.model`, `*.tiktoken`, `tiktoken.model`, `*.jinja`;
//! - mlx-vlm `utils.load_model`: the shards `model.safetensors.index.json` names, else every
//!   `*.safetensors` but `consolidated.safetensors`;
//! - mlx-whisper `load_models.load_model`: `config.json`, `weights.safetensors`, else
//!   `weights.npz`;
//! - transformers `AutoTokenizer` (`tokenization_utils_base`: `tokenizer_config.json`,
//!   `tokenizer.json`, `special_tokens_map.json`, `added_tokens.json`, `chat_template.jinja`,
//!   `additional_chat_templates/*.jinja`, and each tokenizer class's `vocab_files_names`: the
//!   BPE `vocab.json` + `merges.txt`, WordPiece `vocab.txt`, SentencePiece `tokenizer.model`,
//!   `spiece.model`, `sentencepiece.bpe.model`) and `AutoProcessor` (`processing_utils`:
//!   `preprocessor_config.json`, `processor_config.json`, `video_preprocessor_config.json`,
//!   `audio_tokenizer_config.json`, the legacy `chat_template.json`).
//!
//! The index-named shards are not known by name alone: health adds them
//! ([`super::health`]).

/// Top-level files a loader opens when they are there.
pub const NAMED: &[&str] = &[
    // mlx-lm, mlx-vlm, mlx-whisper
    "config.json",
    "generation_config.json",
    "hf_quant_config.json",
    "model.safetensors.index.json",
    "weights.safetensors",
    "weights.npz",
    // transformers' tokenizers
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tiktoken.model",
    // chat templates
    "chat_template.jinja",
    "chat_template.json",
    // processors
    "preprocessor_config.json",
    "processor_config.json",
    "video_preprocessor_config.json",
    "audio_tokenizer_config.json",
];

/// The folder of transformers' further chat templates (`CHAT_TEMPLATE_DIR`).
pub const TEMPLATE_DIR: &str = "additional_chat_templates";

/// Does a loader open the file at `rel` (relative to the model folder, `/`-separated; a name
/// that is not UTF-8 in its lossy form, so `model-\u{fffd}.safetensors` is still a weight
/// file)? Index-named shards in sub-folders are not covered: see the module doc.
pub fn is_loader_file(rel: &str) -> bool {
    match rel.split_once('/') {
        None => {
            NAMED.contains(&rel)
                || (rel.ends_with(".safetensors") && rel != "consolidated.safetensors")
                || rel.ends_with(".tiktoken")
        }
        Some((dir, name)) => dir == TEMPLATE_DIR && !name.contains('/') && name.ends_with(".jinja"),
    }
}

/// What identifies the files a loader read from a model folder, so that a changed model gets
/// a new worker (`serve`'s pool): the folder itself (device and inode — a folder replaced by
/// `mv`, `restore` or a re-clone is another one) and each file at its top level a loader opens
/// ([`is_loader_file`]: weights, configuration, tokenizer, chat-template and processor files;
/// the sentinel and `.hf_cache` are not among them) with its device, inode, size,
/// modification and change times, links followed (a hub snapshot's files are its blobs). One
/// `stat` per file, nothing read: a readdir and a few stats. Equal values: the same files.
///
/// A hub model's `refs/main` that moves needs none of this: its new snapshot is another
/// folder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilesId {
    folder: Option<(u64, u64)>,
    files: Vec<(String, FileStamp)>,
}

/// A file's identity and version, as `stat` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FilesId {
    /// The identity of `folder`'s files now (an unreadable folder or file counts as absent).
    pub fn of(folder: &std::path::Path) -> FilesId {
        use std::os::unix::fs::MetadataExt;
        let stamp = |m: &std::fs::Metadata| FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        };
        let Ok(meta) = std::fs::metadata(folder) else {
            return FilesId::default();
        };
        let mut files: Vec<(String, FileStamp)> = std::fs::read_dir(folder)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if !is_loader_file(&name) {
                    return None;
                }
                let m = std::fs::metadata(e.path()).ok()?;
                m.is_file().then(|| (name, stamp(&m)))
            })
            .collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        FilesId {
            folder: Some((meta.dev(), meta.ino())),
            files,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_loaders_open() {
        for f in [
            "config.json",
            "tokenizer.json",
            "model.safetensors",
            "model-00001-of-00002.safetensors",
            "weights.npz",
            "qwen.tiktoken",
            "additional_chat_templates/tool_use.jinja",
            "model-\u{fffd}.safetensors",
        ] {
            assert!(is_loader_file(f), "{f}");
        }
        for f in [
            "README.md",
            "notes-\u{fffd}.txt",
            "consolidated.safetensors",
            "sub/config.json",
            "additional_chat_templates/x/y.jinja",
            ".hf_cache/hub/x.json",
        ] {
            assert!(!is_loader_file(f), "{f}");
        }
    }
}
