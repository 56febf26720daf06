//! What a model can run and which inputs it may take: the one rule `run` and `serve` apply
//! before any Python starts. It answers with the [`Modality`] the model runs in (the runtime
//! has a backend for each) or a typed [`Refusal`]; each adapter words a refusal its own way
//! (`run` as a CLI error, `serve` as an HTTP 422).
//!
//! `run` picks the modality by what it is given ([`accepts`]: a vision model given only text
//! runs as a text model); `serve` runs one worker per model, so the model alone picks it
//! ([`served`]) and a request must fit it ([`serves`]).

use std::path::Path;

use super::detect;
use super::record::{self, Described, ModelRecord};
use super::verdict::{Capability, Framework, ModelType};

/// How a model runs: text generation, a vision-language model, or speech to text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    Text,
    Vision,
    Speech,
}

/// What a request gives the model besides its text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inputs {
    /// How many images.
    pub images: usize,
    /// Audio to transcribe (or translate).
    pub audio: bool,
    /// The audio is to be translated into English.
    pub translate: bool,
}

/// Why a model cannot run, or cannot take what it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The model is unhealthy (`stale_index`: only because of an index naming missing shards
    /// while its weights are whole, which `--force` runs past).
    Unhealthy { reason: String, stale_index: bool },
    /// mlx-lm cannot run it: the runtime verdict's reason.
    Incompatible(String),
    /// Labelled `PyTorch` (safetensors without MLX markers) and otherwise runnable: `--force`
    /// runs it.
    NeedsForce(String),
    /// Labelled `PyTorch` and not runnable even when forced.
    IncompatibleForced(String),
    /// Images for a model without the `vision` capability.
    NoVision,
    /// More images than [`crate::media::MAX_IMAGES`].
    TooManyImages { given: usize },
    /// Audio for a model without the `audio` capability.
    NoAudio,
    /// Audio for a model that takes it inside a multimodal chat (not speech to text).
    AudioInChat,
    /// Audio for a served model that is not speech to text.
    NotSpeech,
    /// A speech-to-text model given no audio.
    SpeechNeedsAudio,
    /// A speech model in a layout mlx-whisper does not read: why.
    UnsupportedLayout(String),
    /// Translation asked of a model without `audio-translate-en`.
    CannotTranslate,
}

/// May the model be run at all: healthy, or (with `force`) unhealthy only by a stale index?
/// `Ok(Some(reason))` when `force` runs it past its stale index.
pub fn healthy_enough(d: &Described, force: bool) -> Result<Option<String>, Refusal> {
    let Some(reason) = d.health.reason() else {
        return Ok(None);
    };
    let stale_index = record::stale_index_only(d);
    if stale_index && force {
        return Ok(Some(reason.to_string()));
    }
    Err(Refusal::Unhealthy {
        reason: reason.to_string(),
        stale_index,
    })
}

/// Can mlx-lm's loaders run the model? A model labelled `PyTorch` (safetensors without MLX
/// markers) runs only with `force`, when every other check passes (its architecture, no
/// model-supplied code); a forced model with a stale index is judged as if it were healthy.
pub fn runnable(d: &Described, force: bool) -> Result<(), Refusal> {
    if force && record::stale_index_only(d) {
        return record::runtime_if_healthy(d)
            .or_else(|why| {
                if d.record.framework == Framework::PyTorch {
                    record::runtime_as_mlx(d)
                } else {
                    Err(why)
                }
            })
            .map_err(Refusal::Incompatible);
    }
    if d.record.runtime_compatible {
        return Ok(());
    }
    let reason = d.record.reason.clone().unwrap_or_default();
    if !record::forcible(d) {
        return Err(Refusal::Incompatible(reason));
    }
    if !force {
        return Err(Refusal::NeedsForce(reason));
    }
    // Forced: every other gate still applies (model-supplied code is never run).
    record::runtime_as_mlx(d).map_err(Refusal::IncompatibleForced)
}

/// The modality `run` uses for these inputs, or why the model cannot take them: images need
/// `vision` (at most [`crate::media::MAX_IMAGES`]); audio needs a speech-to-text model
/// ([`speech`]); a speech-to-text model needs audio; anything else is text.
pub fn accepts(record: &ModelRecord, path: &Path, inputs: &Inputs) -> Result<Modality, Refusal> {
    let has = |c: Capability| record.capabilities.contains(&c);
    if inputs.images > 0 {
        if !has(Capability::Vision) {
            return Err(Refusal::NoVision);
        }
        if inputs.images > crate::media::MAX_IMAGES {
            return Err(Refusal::TooManyImages {
                given: inputs.images,
            });
        }
        return Ok(Modality::Vision);
    }
    let stt = record.model_type == ModelType::Audio;
    if inputs.audio {
        if !has(Capability::Audio) {
            return Err(Refusal::NoAudio);
        }
        if !stt {
            return Err(Refusal::AudioInChat);
        }
        speech(record, path, inputs.translate)?;
        return Ok(Modality::Speech);
    }
    if stt {
        return Err(Refusal::SpeechNeedsAudio);
    }
    Ok(Modality::Text)
}

/// The one modality a served model's worker runs, whatever a request holds: speech to text
/// for a speech model, vision for a model with the `vision` capability (requests with and
/// without images), text for the rest.
pub fn served(record: &ModelRecord) -> Modality {
    if record.model_type == ModelType::Audio {
        Modality::Speech
    } else if record.capabilities.contains(&Capability::Vision) {
        Modality::Vision
    } else {
        Modality::Text
    }
}

/// The served modality ([`served`]) if it takes these inputs: audio only for a speech model
/// ([`speech`]), which takes nothing else; images only for a vision model.
pub fn serves(record: &ModelRecord, path: &Path, inputs: &Inputs) -> Result<Modality, Refusal> {
    let m = served(record);
    if inputs.audio {
        if m != Modality::Speech {
            return Err(Refusal::NotSpeech);
        }
        speech(record, path, inputs.translate)?;
        return Ok(m);
    }
    match m {
        Modality::Speech => Err(Refusal::SpeechNeedsAudio),
        Modality::Text if inputs.images > 0 => Err(Refusal::NoVision),
        m => Ok(m),
    }
}

/// Can this speech-to-text model take the audio: a Whisper in mlx-whisper's layout, and
/// `audio-translate-en` when asked to translate?
fn speech(record: &ModelRecord, path: &Path, translate: bool) -> Result<(), Refusal> {
    detect::whisper_layout(path).map_err(Refusal::UnsupportedLayout)?;
    if translate && !record.capabilities.contains(&Capability::AudioTranslateEn) {
        return Err(Refusal::CannotTranslate);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(model_type: &str, caps: &[&str]) -> ModelRecord {
        serde_json::from_value(serde_json::json!({
            "name": "m", "hash": null, "size_bytes": 0, "last_modified": "",
            "framework": "MLX", "model_type": model_type, "capabilities": caps,
            "context_length": null, "health": "healthy", "runtime_compatible": true,
            "reason": null, "cached": false, "origin": null, "content_hash": null,
            "hash_modified": null, "clean": null, "source": "workspace", "path": "",
            "revision": null,
        }))
        .unwrap()
    }

    fn images(n: usize) -> Inputs {
        Inputs {
            images: n,
            ..Inputs::default()
        }
    }

    /// `run` picks by the inputs, `serve` by the model: a vision model given text alone is a
    /// text model in `run` and a vision model in `serve`.
    #[test]
    fn run_picks_by_the_inputs_serve_by_the_model() {
        let nowhere = Path::new("/nonexistent");
        let text = record("chat", &["text-generation", "chat"]);
        let vision = record("chat", &["text-generation", "chat", "vision"]);
        let speech = record("audio", &["audio"]);
        let none = Inputs::default();
        assert_eq!(accepts(&vision, nowhere, &none), Ok(Modality::Text));
        assert_eq!(serves(&vision, nowhere, &none), Ok(Modality::Vision));
        assert_eq!(accepts(&vision, nowhere, &images(2)), Ok(Modality::Vision));
        assert_eq!(
            accepts(&vision, nowhere, &images(crate::media::MAX_IMAGES + 1)),
            Err(Refusal::TooManyImages {
                given: crate::media::MAX_IMAGES + 1
            })
        );
        assert_eq!(accepts(&text, nowhere, &images(1)), Err(Refusal::NoVision));
        assert_eq!(serves(&text, nowhere, &images(1)), Err(Refusal::NoVision));
        // A speech model takes nothing but audio; `run` tells images first.
        assert_eq!(
            accepts(&speech, nowhere, &none),
            Err(Refusal::SpeechNeedsAudio)
        );
        assert_eq!(
            accepts(&speech, nowhere, &images(1)),
            Err(Refusal::NoVision)
        );
        assert_eq!(
            serves(&speech, nowhere, &images(1)),
            Err(Refusal::SpeechNeedsAudio)
        );
        let audio = Inputs {
            audio: true,
            ..Inputs::default()
        };
        assert_eq!(accepts(&text, nowhere, &audio), Err(Refusal::NoAudio));
        assert_eq!(serves(&text, nowhere, &audio), Err(Refusal::NotSpeech));
        let chat_audio = record("chat", &["chat", "audio"]);
        assert_eq!(
            accepts(&chat_audio, nowhere, &audio),
            Err(Refusal::AudioInChat)
        );
        assert!(matches!(
            accepts(&speech, nowhere, &audio),
            Err(Refusal::UnsupportedLayout(_))
        ));
        assert_eq!(served(&speech), Modality::Speech);
        assert_eq!(served(&text), Modality::Text);
    }
}
