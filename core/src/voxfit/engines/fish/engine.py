"""Fish Speech (OpenAudio S1) on torch, through fish-speech's own model classes.

Plugins load it with :func:`load_fish_engine` on the device they chose and
then call :func:`disable_training_artifacts` from their
``disable_training_artifacts`` hook. Importing this module is free: torch,
fish_speech and onnxruntime are imported when an engine is built.

Pipeline per text chunk: fish-speech's ``generate_long`` (text -> semantic
tokens, under ``torch.inference_mode``) -> the codec's decoder (torch, or the
ONNX export on ONNX Runtime) -> 16-bit PCM at the codec's sample rate.

What the loader does NOT do: put anything in eval mode, turn off gradients
or gradient checkpointing, or remove weight norm. It returns the model as
fish-speech's loader leaves it; the ``disable_training_artifacts`` hook
cleans it and the core verifies. An engine that is still dirty refuses to
synthesize.
"""

from __future__ import annotations

import collections
import contextlib
import re
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from voxfit.engines.fish.info import INSTALL_HINT
from voxfit.sdk import (
    AudioChunk,
    EngineLoadError,
    InvariantViolation,
    ModelError,
    ModelSpec,
    UsageError,
    innermost,
    training_artifacts,
    usable_cpu_count,
)

BACKEND = "fish-torch"
BACKEND_ONNX_CODEC = "fish-torch+onnx-codec"
PRECISIONS = ("fp32", "fp16", "bf16")
QUANTIZATIONS = ("none", "int8-weight-only")
CODEC_BACKENDS = ("torch", "onnx")
# fish-speech's generate_long defaults.
DEFAULT_SAMPLING = {"temperature": 0.8, "top_p": 0.8, "repetition_penalty": 1.1}
HISTORY = 4096  # chunks whose metrics an engine keeps


def import_fish_stack() -> dict[str, Any]:
    """Import torch and fish-speech (with the torchaudio placeholder where needed); one-line error if absent."""
    from voxfit.engines.fish.torchaudio_guard import ensure_torchaudio_importable

    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise EngineLoadError(f"torch is not installed ({exc}); {INSTALL_HINT}") from None
    torchaudio_state = ensure_torchaudio_importable()
    try:
        from fish_speech.models.text2semantic import inference, llama
        from loguru import logger
    except ImportError as exc:
        raise EngineLoadError(f"fish-speech cannot be imported ({exc}); {INSTALL_HINT}") from None
    logger.disable("fish_speech")  # its INFO lines per sentence; voxfit reports what matters
    return {"inference": inference, "llama": llama, "torchaudio": torchaudio_state}


def _dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# -- int8 weight-only --------------------------------------------------------
# fish-speech 0.1.0's loader imports tools.llama.quantize for int8, which the
# wheel does not ship. This is the same scheme (gpt-fast's): int8 weights with
# one scale per output row, dequantised on the fly in the compute dtype.


def _int8_linear_class() -> type:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Int8WeightOnlyLinear(nn.Module):
        def __init__(self, linear: nn.Linear) -> None:
            super().__init__()
            w = linear.weight.detach()
            scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
            q = torch.round(w / scales[:, None]).clamp(-128, 127).to(torch.int8)
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.register_buffer("weight", q)
            self.register_buffer("scales", scales.to(w.dtype))
            self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = F.linear(x, self.weight.to(x.dtype)) * self.scales
            return out if self.bias is None else out + self.bias

    return Int8WeightOnlyLinear


def quantize_int8_weight_only(model: Any) -> int:
    """Replace every nn.Linear of the LLM by an int8 weight-only one; return how many."""
    from torch import nn

    cls = _int8_linear_class()
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, cls(child))
                count += 1
    return count


# -- the engine --------------------------------------------------------------


@dataclass
class ChunkMetrics:
    text: str
    tokens: int
    generate_s: float
    decode_s: float
    audio_s: float
    first_audio_s: float
    batch: int = 1  # the largest batch its sequence decoded in

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.generate_s if self.generate_s > 0 else 0.0

    @property
    def rtf(self) -> float:
        return (self.generate_s + self.decode_s) / self.audio_s if self.audio_s > 0 else float("inf")


@dataclass
class FishEngine:
    """A loaded Fish Speech model and codec; satisfies :class:`voxfit.engine.Engine`."""

    llm: Any
    codec: Any
    decode_one_token: Any
    checkpoint: Path
    device: str
    precision: str
    quantization: str
    compiled: Optional[str]
    threads: Optional[int]
    codec_backend_requested: str
    cache_dir: Optional[Path]
    max_new_tokens: Optional[int]
    seed: Optional[int]
    sampling: dict[str, float]
    prompt_tokens: Any = None
    prompt_text: Optional[str] = None
    reference_encode_s: Optional[float] = None
    load_s: float = 0.0
    backend: str = BACKEND
    sample_rate: int = 0
    notes: list[str] = field(default_factory=list)
    # the chunks spoken, the latest HISTORY of them (a server speaks for months)
    history: collections.deque[ChunkMetrics] = field(default_factory=lambda: collections.deque(maxlen=HISTORY))
    codec_backend: str = "torch"
    onnx_codec: Any = None
    external_decoder: Any = None  # set by replace_codec_decoder (e.g. the MPS plugin's Core ML decoder)
    _pending_reference: Any = None
    _reference_key: Any = None  # (clip path, transcript) of the voice configure() cloned, to encode it once
    _loaded_voice: Any = None  # the voice state at load, restored when a configure() leaves options unset
    batch_size: int = 1  # sequences decoded together (continuous batching): requests this engine runs at once
    planned_tokens_per_s: Optional[float] = None  # the plan's decoding speed: sizes the first audio window
    _prepared: bool = False
    _closed: bool = False
    _modules: dict[str, Any] = field(default_factory=dict)
    _batcher: Any = None
    _references: dict[Any, Any] = field(default_factory=dict)  # (clip, transcript) -> codes, for requests' voices
    _lock: Any = field(default_factory=threading.Lock)
    _mine: Any = field(default_factory=threading.local)  # each thread's last chunk, for metrics()
    # Windows of several requests decoded at once would each take a core from the batch's decode loop,
    # which every request waits on: they take turns while it decodes (scheduler.CodecTurns)
    _codec_turn: Any = None
    _reach: Optional[tuple[int, int]] = None  # see _decoder_reach

    @property
    def max_concurrent(self) -> int:
        """Requests decoded at once (ConcurrentSynthesis): the planned batch size."""
        return self.batch_size

    # -- Engine protocol ------------------------------------------------

    def inference_modules(self) -> list[Any]:
        return [m for m in (self.llm, self.codec) if m is not None]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        device = self.device
        self.llm = self.codec = self.decode_one_token = self.onnx_codec = self.external_decoder = None
        import gc

        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def synthesize(self, text: str) -> Iterator[AudioChunk]:
        """Speak one sentence-sized chunk with the configured voice: audio in windows as it is decoded."""
        return self.synthesize_with(text, None)

    def synthesize_with(self, text: str, options: Any, *, first: bool = True) -> Iterator[AudioChunk]:
        """Speak one chunk with these options (None: the configured voice), beside other requests: its
        sequence joins the batch at the next step and its audio comes window by window
        (ConcurrentSynthesis). Closing the iterator early takes it out of the batch at the next step."""
        if self._closed:
            raise EngineLoadError("this Fish Speech engine was closed")
        if not text.strip():
            return
        self.prepare()
        import numpy as np

        from voxfit.engines.fish import streaming

        voice = self._voice_for(options)
        start = time.perf_counter()
        # from the plan's speed, not this run's: the same text and seed give the same windows, so the same audio
        plan = streaming.plan_windows(len(text), self.planned_tokens_per_s)
        request = self._submit(text, voice, chunks=plan.sizes())
        decode_s = [0.0]

        def timed_decode(codes: Any, context: int, last: bool) -> Any:
            t = time.perf_counter()
            try:
                with self._codec_turn.turn(last):  # one window at a time while the batch decodes (CodecTurns)
                    return self.decode_window(codes, context)
            finally:
                decode_s[0] += time.perf_counter() - t

        audio_samples, tokens, first_audio = 0, 0, None
        try:
            for wave, frames in streaming.windows(request.results(), timed_decode, plan):
                pcm = (np.clip(wave, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
                audio_samples, tokens = audio_samples + len(wave), tokens + frames
                first_audio = first_audio or time.perf_counter() - start
                yield AudioChunk(pcm=pcm, sample_rate=self.sample_rate, text=text, tokens=frames)
        finally:
            request.cancel()  # a no-op when it finished; else it leaves the batch at the next step
        total = time.perf_counter() - start
        self._mine.last = ChunkMetrics(
            text=text, tokens=tokens, generate_s=total - decode_s[0], decode_s=decode_s[0],
            audio_s=audio_samples / self.sample_rate, first_audio_s=first_audio or total,
            batch=request.batch_seen)
        self.history.append(self._mine.last)

    def metrics(self) -> dict[str, Any]:
        """What the last chunk this thread spoke measured (ReportsMetrics): the batch its sequence decoded
        in, and when its first audio came."""
        last = getattr(self._mine, "last", None)
        if last is None:
            return {}
        return {"batch": last.batch, "first_audio_s": round(last.first_audio_s, 4),
                "chunk_tokens_per_s": round(last.tokens_per_s, 2)}

    def configure(self, options: Any) -> None:
        """Apply a complete, validated ``FishOptions`` (``voxfit.engines.fish.plugin``): what is unset returns
        to the state the engine was loaded with, so one request's voice never leaks into the next.
        ``reference_audio`` + ``reference_text`` clone a voice (encoded before the next synthesis; the same
        clip and transcript are not encoded twice)."""
        given = options.model_dump(exclude_unset=True)
        if self._loaded_voice is None:
            self._loaded_voice = (self.seed, self.max_new_tokens, dict(self.sampling),
                                  self.prompt_text, self.prompt_tokens, self._pending_reference)
        seed, max_new_tokens, sampling, prompt_text, prompt_tokens, pending = self._loaded_voice
        self.seed, self.max_new_tokens, self.sampling = seed, max_new_tokens, dict(sampling)
        key = (str(given.get("reference_audio")), given.get("reference_text")) if "reference_audio" in given else None
        if key is not None and key == self._reference_key:
            given.pop("reference_audio"), given.pop("reference_text", None)  # already encoded: keep it
        elif key is None:
            self.prompt_text, self.prompt_tokens, self._pending_reference = prompt_text, prompt_tokens, pending
            self._reference_key = None
        self._configure(**given)
        if key is not None:
            self._reference_key = key

    def _configure(self, **options: Any) -> None:
        _check_options(options)
        if "reference_audio" in options or "reference_text" in options:
            audio, text = options.get("reference_audio"), options.get("reference_text")
            self._pending_reference = _read_reference(audio, text, self.sample_rate)
            self.prompt_text, self.prompt_tokens = str(text).strip(), None
            if self._prepared:
                _encode_pending_reference(self)
        _apply_settings(self, options)

    def _voice_for(self, options: Any) -> "_Voice":
        """One request's voice: the configured one with the request's options on top (nothing shared changes)."""
        voice = _Voice(self.seed, self.max_new_tokens, dict(self.sampling), self.prompt_text, self.prompt_tokens)
        given = options.model_dump(exclude_unset=True) if options is not None else {}
        _check_options(given)
        _apply_settings(voice, given)
        if given.get("reference_audio") is not None:
            key = (str(given["reference_audio"]), given.get("reference_text"))
            if key != self._reference_key:
                voice.prompt_text, voice.prompt_tokens = str(key[1]).strip(), self._reference_codes(key)
        return voice

    def _reference_codes(self, key: tuple[str, Any]) -> Any:
        """A request's reference clip encoded once (the last few kept), read and encoded in its own thread."""
        with self._lock:
            codes = self._references.get(key)
        if codes is None:
            codes = self.encode_reference(_read_reference(key[0], key[1], self.sample_rate))
            with self._lock:
                self._references[key] = codes
                while len(self._references) > 8:
                    self._references.pop(next(iter(self._references)))
        return codes

    def _submit(self, text: str, voice: "_Voice", chunks: Optional[Iterator[int]] = None) -> Any:
        """Encode the prompt and queue its sequence for the batch, its frames to come ``chunks`` at a time;
        UsageError when it cannot fit the model."""
        import torch

        from voxfit.engines.fish.batched import Sampling, encode_prompt
        from voxfit.engines.fish.scheduler import Request

        try:
            prompt, masks, parts = encode_prompt(self.llm, text, voice.prompt_text, voice.prompt_tokens)
        except ValueError as exc:
            raise UsageError(f"text chunk plus voice reference is too long for this model ({exc}); "
                             "use a shorter reference clip") from None
        budget = min(self.max_tokens_for(text, voice.max_new_tokens), self.llm.config.max_seq_len - prompt.shape[1])
        generator = torch.Generator(device=self.device)
        generator.manual_seed(voice.seed) if voice.seed is not None else generator.seed()
        sampling = Sampling(generator=generator, **voice.sampling)
        return self._batcher.submit(Request(prompt=prompt.to(self.device), audio_masks=masks, audio_parts=parts,
                                            budget=budget, sampling=sampling, chunks=chunks))

    @property
    def samples_per_frame(self) -> int:
        return int(getattr(self.codec, "frame_length", 2048))

    # -- pieces, public for benchmarks and tests ------------------------

    def prepare(self) -> None:
        """Before the first synthesis: verify the invariants, set up the ONNX codec if asked, start the batch."""
        with self._lock:
            self._prepare()

    def _prepare(self) -> None:
        if self._prepared:
            return
        found = training_artifacts(self.inference_modules())
        if found:
            raise InvariantViolation(
                "refusing to synthesize: the Fish Speech engine still carries training artifacts "
                "(call voxfit.engines.fish.engine.disable_training_artifacts first): " + "; ".join(found)
            )
        _encode_pending_reference(self)  # only now: a codec in training mode encodes at random
        if self.codec_backend_requested == "onnx":
            from voxfit.engines.fish.onnx_codec import prepare_onnx_codec

            self.onnx_codec, notes = prepare_onnx_codec(
                self.codec, self.checkpoint, self.cache_dir, threads=self.threads or 1
            )
            self.notes.extend(notes)
            self.codec_backend = "onnx" if self.onnx_codec is not None else "torch"
            self.backend = BACKEND_ONNX_CODEC if self.onnx_codec is not None else BACKEND
        from voxfit.engines.fish.batched import BatchedDecoder
        from voxfit.engines.fish.scheduler import Batcher, CodecTurns

        decoder = BatchedDecoder(self.llm, self.batch_size, next(self.llm.parameters()).dtype, self.device)
        if self.compiled:
            decoder.compile("inductor" if self.device.startswith("cuda") else self.compiled)
            self.notes.append(f"batched decoder compiled ({self.compiled} on {self.device}, dynamic shapes, no CUDA "
                              "graphs: the batch changes as requests join and leave); its speed-up is not measured")
        self._batcher = Batcher(decoder, threads=self.threads)
        self._codec_turn = CodecTurns(lambda: self._batcher is not None and self._batcher.busy,
                                      idle=_codec_windows_at_once(self.device, self.threads))
        self._batcher.on_idle = self._codec_turn.batch_went_idle
        self._prepared = True

    def max_tokens_for(self, text: str, max_new_tokens: Optional[int] = None) -> int:
        """Upper bound of semantic tokens for a text: never 0 (0 means "up to max_seq_len" to fish-speech).

        S1 speaks about 21.5 codec frames per second and people about 15
        characters per second, so ~1.5 frames per character; 4 per character
        plus a margin leaves room for slow speech and never runs away.
        """
        cap = max_new_tokens if max_new_tokens is not None else self.max_new_tokens
        if cap:
            return int(cap)
        return max(64, 4 * len(text) + 32)

    def generate_codes(self, text: str) -> Any:
        """Semantic + residual codes [num_codebooks, T] for one chunk, through fish-speech's generate_long."""
        import torch

        inference = self._modules["inference"]
        prompt = (
            {"prompt_text": self.prompt_text, "prompt_tokens": self.prompt_tokens}
            if self.prompt_tokens is not None
            else {"prompt_tokens": []}  # None crashes in 0.1.0
        )
        codes = []
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                # fish-speech copies its sampling tensors with torch.tensor(tensor) on every chunk
                warnings.filterwarnings("ignore", message="To copy construct from a tensor")
                for response in inference.generate_long(
                    model=self.llm,
                    device=self.device,
                    decode_one_token=self.decode_one_token,
                    text=text,
                    max_new_tokens=self.max_tokens_for(text),
                    **self.sampling,
                    **prompt,
                ):
                    if response.action == "sample":
                        codes.append(response.codes)
                    elif response.action == "next":
                        break
        except ValueError as exc:
            if "Prompt is too long" in str(exc):
                raise UsageError(
                    f"text chunk plus voice reference is too long for this model ({exc}); "
                    "use a shorter reference clip"
                ) from None
            raise
        finally:
            # fish-speech's DualARTransformer.setup_caches builds new fast-layer KV-cache modules on
            # every generate, and a new module starts in training mode: keep the engine in the state
            # the invariant check verified (the caches hold no dropout, so generation is unaffected).
            self.llm.eval()
        if not codes:
            return torch.zeros((self.llm.config.num_codebooks, 0), dtype=torch.long)
        return torch.cat(codes, dim=1)

    def replace_codec_decoder(self, decoder: Any, backend: Optional[str] = None) -> None:
        """Decode with ``decoder`` instead of the torch codec: a callable taking codes
        [num_codebooks, T] as a CPU integer array and returning a float32 waveform at
        the codec's rate. Encoding (voice cloning) stays on the torch codec."""
        self.external_decoder = decoder
        self.codec_backend = "external"
        if backend:
            self.backend = backend

    def decode(self, codes: Any) -> Any:
        """Codes [num_codebooks, T] -> float32 waveform (numpy) at the codec's sample rate."""
        return self.decode_window(codes, 0)

    def decode_window(self, codes: Any, context: int) -> Any:
        """The audio of codes [num_codebooks, T] after their first ``context`` frames (decoded before).

        The quantizer (codes to latent, with a transformer at the frame rate: ~3% of a decode) runs over
        all of them, for the left context its attention reads; the convolutional decoder (the rest) only
        over the new frames and the few before them that it reads (``codec.decoder_context_frames``).
        """
        import numpy as np
        import torch

        if codes.shape[1] <= context:
            return np.zeros(0, dtype=np.float32)
        if self.external_decoder is not None:
            wave = np.asarray(self.external_decoder(codes.detach().cpu().numpy()), dtype=np.float32).reshape(-1)
            return wave[context * self.samples_per_frame:]
        reach, per_frame = self._decoder_reach()
        keep = min(context, reach)
        with torch.inference_mode(), _repeatable_attention(self.device):
            latent = self.codec.quantizer.decode(codes[None].to(device=self.device, dtype=torch.long))
            latent = latent[..., (context - keep) * per_frame:]
            if self.onnx_codec is not None:
                wave = self.onnx_codec.decode_latent(latent)
            else:
                wave = self.codec.decoder(latent)[0, 0].float().cpu().numpy()
        return wave[keep * self.samples_per_frame:]

    def _decoder_reach(self) -> tuple[int, int]:
        """(frames of left context the convolutional decoder reads, latent samples per frame)."""
        if self._reach is None:
            from voxfit.engines.fish.codec import decoder_context_frames, latent_per_frame

            self._reach = (decoder_context_frames(self.codec), latent_per_frame(self.codec))
        return self._reach

    def encode_reference(self, wave: Any) -> Any:
        """Float waveform at the codec's rate -> reference codes [num_codebooks, T] on the model's device."""
        import torch

        dtype = next(self.codec.parameters()).dtype
        with torch.inference_mode(), _repeatable_attention(self.device):
            x = torch.as_tensor(wave, dtype=dtype, device=self.device)[None, None]
            indices, _ = self.codec.encode(x)
        return indices[0].to(self.device)

    def summary(self) -> dict[str, float]:
        """Totals over the chunks spoken so far (the latest HISTORY): tokens/s, RTF, time to first audio."""
        if not self.history:
            return {}
        gen = sum(m.generate_s for m in self.history)
        dec = sum(m.decode_s for m in self.history)
        audio = sum(m.audio_s for m in self.history)
        tokens = sum(m.tokens for m in self.history)
        return {
            "chunks": len(self.history),
            "tokens": tokens,
            "tokens_per_s": tokens / gen if gen else 0.0,
            "audio_s": audio,
            "rtf": (gen + dec) / audio if audio else float("inf"),
            "time_to_first_audio_s": self.history[0].first_audio_s,
            "decode_share": dec / (gen + dec) if gen + dec else 0.0,
        }


@dataclass
class _Voice:
    """The voice one request speaks with."""

    seed: Optional[int]
    max_new_tokens: Optional[int]
    sampling: dict[str, float]
    prompt_text: Optional[str]
    prompt_tokens: Any


def _codec_windows_at_once(device: str, threads: Optional[int]) -> int:
    """Windows the codec may decode at once while no sequence decodes: on the CPU, as many as the cores
    hold at the codec's thread count (the batch's core is free then); elsewhere one device, one at a time."""
    if device != "cpu":
        return 1
    return max(1, (usable_cpu_count() or 1) // max(1, threads or 1))


def _repeatable_attention(device: str) -> Any:
    """On the CPU, the codec's attention through the plain (math) kernel: PyTorch's CPU flash kernel
    rounds differently from call to call on the same input (docs/field-notes.md#cpu-flash-attention),
    so a seeded sentence's audio could differ by one int16 step between runs; the math kernel costs
    nothing measurable at the codec's window sizes. Held through :func:`attention.math_attention`, which
    the batch's loop shares: the kernel choice is process-wide, and threads overlap."""
    if device != "cpu":
        return contextlib.nullcontext()
    from voxfit.engines.fish.attention import math_attention

    return math_attention()


def _apply_settings(target: Any, options: dict[str, Any]) -> None:
    """Set the seed, the token cap and the sampling settings the options give on ``target`` (the engine's
    configured voice, or one request's :class:`_Voice`); checked already by :func:`_check_options`."""
    if options.get("seed") is not None:
        target.seed = int(options["seed"])
    if options.get("max_new_tokens") is not None:
        target.max_new_tokens = int(options["max_new_tokens"])
    target.sampling.update({k: float(options[k]) for k in DEFAULT_SAMPLING if options.get(k) is not None})


def _check_options(options: dict[str, Any]) -> None:
    known = {"reference_audio", "reference_text", "seed", "max_new_tokens", *DEFAULT_SAMPLING}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"engine {BACKEND} does not take option{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}")
    if options.get("reference_text") is not None and options.get("reference_audio") is None:
        raise UsageError("reference_text needs reference_audio (the clip it transcribes)")
    if options.get("max_new_tokens") is not None and int(options["max_new_tokens"]) < 1:
        raise UsageError("max_new_tokens must be at least 1")
    for name in DEFAULT_SAMPLING:
        if options.get(name) is not None:
            value, upper = float(options[name]), (2.0 if name != "top_p" else 1.0)
            if not 0.0 < value <= upper or (name != "top_p" and value == upper):
                raise UsageError(f"{name}={value} is out of range (0, {upper:g})")


# -- loading -----------------------------------------------------------------


def _checkpoint_dir(model: ModelSpec) -> Path:
    from voxfit.engines.fish import spec as fish_spec

    if model.family != "fish" or model.path is None:
        raise EngineLoadError(f"{BACKEND} runs Fish Speech checkpoints, not {model.family} model {model.name}")
    path = Path(model.path)
    if not path.is_dir():
        raise ModelError(f"Fish Speech checkpoint directory not found: {path}")
    if fish_spec.read(path) is None:  # re-checks the layout and config: files may have changed since the plan
        raise ModelError(f"{path} is not a Fish Speech checkpoint directory")
    return path


def _read_reference(path: Any, text: Optional[str], sample_rate: int) -> Any:
    import numpy as np
    import soundfile as sf

    ref = Path(path).expanduser()
    if not ref.is_file():
        raise ModelError(f"reference audio not found: {ref}")
    if not text or not text.strip():
        raise UsageError(f"reference audio {ref.name} needs its transcript (--reference-text) for voice cloning")
    try:
        wave, rate = sf.read(str(ref), dtype="float32", always_2d=True)
    except Exception as exc:
        raise ModelError(f"reference audio {ref} is not a readable audio file ({_first_line(exc)})") from None
    wave = wave.mean(axis=1)
    if wave.size == 0:
        raise ModelError(f"reference audio {ref} is empty")
    if rate != sample_rate:
        import julius
        import torch

        wave = julius.resample_frac(torch.from_numpy(np.ascontiguousarray(wave)), rate, sample_rate).numpy()
    return wave


def _load_llm(checkpoint: Path, llama: Any) -> Any:
    import torch

    from voxfit.engines.fish.codec import check_weights_match, read_state_dict

    weights = read_state_dict(checkpoint / "model.pth")  # memory-mapped; a corrupt file is a ModelError here
    # fish-speech's own fix-ups: a LightningModule's "model." prefix, and audio weights it drops
    weights = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in weights.items()}
    weights = {k: v for k, v in weights.items() if "audio_" not in k}
    with tempfile.TemporaryDirectory(prefix="voxfit-fish-") as tmp:
        path = checkpoint
        if re.search(r"int[48]", str(checkpoint)):
            # fish-speech 0.1.0 takes a quantized-loading branch (absent from its wheel) for any path
            # containing "int8"/"int4"; load through a neutral symlink instead.
            path = Path(tmp) / "checkpoint"
            path.symlink_to(checkpoint.resolve(), target_is_directory=True)
        try:
            # the model config.json describes, on the meta device (names and shapes, nothing allocated):
            # fish-speech loads with strict=False and only logs what is missing or mis-shaped
            with torch.device("meta"):
                shape = llama.BaseTransformer.from_pretrained(str(path), load_weights=False)
        except Exception as exc:
            raise ModelError(f"cannot load the Fish Speech model from {checkpoint} ({_first_line(exc)})") from None
        check_weights_match(weights, shape.state_dict(), checkpoint / "model.pth", "config.json")
        del shape
        try:
            # load_weights=True: the default (False) silently returns RANDOM weights
            llm = llama.BaseTransformer.from_pretrained(str(path), load_weights=True)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot load the Fish Speech model from {checkpoint} ({_first_line(exc)})") from None
    _encode_in_the_callers_thread(llm.tokenizer)
    return llm


def _encode_in_the_callers_thread(tokenizer: Any) -> None:
    """fish-speech's tokenizer encodes through tiktoken's ``encode_batch``, which starts a pool of 8 threads
    for every call, that is for every request, to encode what is one piece of text (a chunk of at most
    400,000 characters). Encode each piece in the calling thread instead: the same tokens (``encode_batch``
    is ``encode`` mapped over the pieces), without the threads and the interpreter's lock passed among them
    while the batch decodes."""
    model = getattr(tokenizer, "tkt_model", None)
    if model is None or not hasattr(model, "encode"):
        return

    def encode_batch(texts: list[str], *, num_threads: int = 8, **kwargs: Any) -> list[list[int]]:
        return [model.encode(text, **kwargs) for text in texts]

    model.encode_batch = encode_batch


def load_fish_engine(
    model: ModelSpec,
    *,
    device: str,
    precision: str,
    quantization: str,
    compile: bool,
    threads: Optional[int],
    codec_backend: str = "torch",
    reference_audio: Optional[Any] = None,
    reference_text: Optional[str] = None,
    cache_dir: Optional[Path] = None,
    max_new_tokens: Optional[int] = None,
    seed: Optional[int] = None,
    sampling: Optional[dict[str, float]] = None,
    batch_size: int = 1,
    planned_tokens_per_s: Optional[float] = None,
) -> FishEngine:
    """Load a Fish Speech checkpoint on ``device`` (chosen once, never moved) with real weights.

    ``precision``: fp32, fp16 or bf16 for the LLM and the codec. ``quantization``: none, or
    int8-weight-only (the LLM's linear layers; worth it where a fused kernel exists, compiled on CUDA).
    ``compile``: torch.compile the per-token decode step. ``threads``: torch's (and ONNX Runtime's)
    intra-op threads. ``codec_backend``: torch, or onnx (the codec decoder exported to ONNX, cached by
    checkpoint hash, verified against torch; falls back to torch with a note). ``reference_audio`` with
    ``reference_text``: a voice to clone. ``max_new_tokens``: cap of semantic tokens per chunk (default
    scales with the chunk). ``seed``: re-seed before every chunk. ``batch_size``: sequences decoded together,
    each with its own KV-cache slot at the model's length (allocated when the engine first speaks).
    ``planned_tokens_per_s``: the plan's decoding speed, which sizes the first audio window.

    Errors: :class:`ModelError` for missing/corrupt files or reference audio,
    :class:`EngineLoadError` when the runtime is missing or an option is unsupported.
    """
    started = time.perf_counter()
    _check_load_options(device, precision, quantization, codec_backend)
    checkpoint = _checkpoint_dir(model)
    if reference_audio is not None and not Path(reference_audio).expanduser().is_file():
        raise ModelError(f"reference audio not found: {Path(reference_audio).expanduser()}")
    modules = import_fish_stack()  # heavy: only now
    import torch

    from voxfit.engines.fish import codec as fish_codec

    _check_device(torch, device, threads)
    dtype, notes = _dtype(precision), [f"torchaudio: {modules['torchaudio']}"]
    llm = _placed_llm(checkpoint, modules, device, dtype, quantization, notes)
    decode_one_token, compiled = _decode_step(torch, modules, device, compile)
    codec = fish_codec.load_codec(checkpoint, device, dtype)
    engine = FishEngine(
        llm=llm, codec=codec, decode_one_token=decode_one_token, checkpoint=checkpoint, device=device,
        precision=precision, quantization=quantization, compiled=compiled, threads=threads,
        codec_backend_requested=codec_backend, cache_dir=Path(cache_dir) if cache_dir else None,
        max_new_tokens=max_new_tokens, seed=seed, sampling={**DEFAULT_SAMPLING, **(sampling or {})},
        sample_rate=int(codec.sample_rate), notes=notes, _modules=modules,
        batch_size=max(1, int(batch_size)), planned_tokens_per_s=planned_tokens_per_s,
    )
    _attach_reference(engine, reference_audio, reference_text)
    engine.load_s = time.perf_counter() - started
    return engine


def _placed_llm(checkpoint: Path, modules: dict[str, Any], device: str, dtype: Any, quantization: str,
                notes: list[str]) -> Any:
    llm = _load_llm(checkpoint, modules["llama"]).to(device=device, dtype=dtype)
    if quantization == "int8-weight-only":
        n = quantize_int8_weight_only(llm)
        notes.append(f"int8 weight-only: {n} linear layers quantized (one scale per output row)")
    return llm


def _attach_reference(engine: FishEngine, audio: Optional[Any], text: Optional[str]) -> None:
    if audio is not None:
        engine._pending_reference = _read_reference(audio, text, engine.sample_rate)  # encoded in prepare()
        engine.prompt_text = text.strip() if text else None


def _check_load_options(device: str, precision: str, quantization: str, codec_backend: str) -> None:
    if precision not in PRECISIONS:
        raise EngineLoadError(f"unknown precision {precision!r} for {BACKEND} (choose {', '.join(PRECISIONS)})")
    if quantization not in QUANTIZATIONS:
        raise EngineLoadError(f"quantization {quantization!r} is not supported by {BACKEND} "
                              f"(supported: {', '.join(QUANTIZATIONS)})")
    if codec_backend not in CODEC_BACKENDS:
        raise EngineLoadError(f"unknown codec backend {codec_backend!r} (choose {', '.join(CODEC_BACKENDS)})")
    if codec_backend == "onnx" and (not device.startswith("cpu") or precision != "fp32"):
        raise EngineLoadError("the ONNX codec path runs on the CPU in fp32 only")


def _check_device(torch: Any, device: str, threads: Optional[int]) -> None:
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineLoadError("CUDA is not available to torch in this process")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise EngineLoadError("MPS is not available to torch in this process")


def _decode_step(torch: Any, modules: dict[str, Any], device: str, compile: bool) -> tuple[Any, Optional[str]]:
    """fish-speech's per-token decode step, compiled as fish-speech itself would (inductor with CUDA graphs on
    CUDA, aot_eager elsewhere) when asked; the compiler's name, or None."""
    step = modules["inference"].decode_one_token_ar
    if not compile:
        return step, None
    on_cuda = device.startswith("cuda")
    compiler = "inductor" if on_cuda else "aot_eager"
    return torch.compile(step, backend=compiler, mode="reduce-overhead" if on_cuda else None, fullgraph=True), compiler


def _encode_pending_reference(engine: FishEngine) -> None:
    wave = getattr(engine, "_pending_reference", None)
    if wave is None:
        return
    start = time.perf_counter()
    engine.prompt_tokens = engine.encode_reference(wave)
    engine.reference_encode_s = time.perf_counter() - start
    engine._pending_reference = None


# -- training artifacts ------------------------------------------------------


def disable_training_artifacts(engine: Any) -> list[str]:
    """Switch off everything only training needs on a fish engine; one line per action taken.

    Called by the fish default plugin's ``disable_training_artifacts`` hook (it
    ignores engines that are not fish engines and returns []). Idempotent.
    """
    engine = innermost(engine)  # a plugin's wrapper (e.g. the CUDA plugin's GPU sampler) around the fish engine
    if not isinstance(engine, FishEngine) or engine._closed:
        return []
    from voxfit.engines.fish.codec import strip_weight_norm

    actions = []
    # Weight norm first: removing a legacy hook re-creates `weight` as a new parameter that tracks gradients.
    new, old = strip_weight_norm(engine.codec)
    if new or old:
        actions.append(
            f"fish codec: weight norm folded into {new + old} convolutions "
            f"({new} parametrizations, {old} legacy hooks); output unchanged"
        )
    for label, module in (("LLM", engine.llm), ("codec", engine.codec)):
        training = sum(1 for m in module.modules() if m.training)
        if training:
            module.eval()
            actions.append(f"fish {label}: eval mode, dropout inactive ({training} modules were in training mode)")
        grads = sum(1 for p in module.parameters() if p.requires_grad)
        if grads:
            module.requires_grad_(False)
            actions.append(f"fish {label}: gradient tracking off for {grads} parameter tensors")
    # The flag lives on config objects: the model's, and a copy the fast layers' attention modules hold.
    configs = {id(c): c for m in engine.llm.modules() if (c := getattr(m, "config", None)) is not None}
    switched = 0
    for config in configs.values():
        if getattr(config, "use_gradient_checkpointing", False):
            config.use_gradient_checkpointing = False
            switched += 1
    if switched:
        actions.append(
            f"fish LLM: gradient checkpointing off in {switched} configs (the checkpoint's config.json ships it on)"
        )
    return actions
