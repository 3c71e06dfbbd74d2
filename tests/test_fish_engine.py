"""The Fish Speech engine on a tiny checkpoint built with fish-speech's own classes, loaded by the real loader."""

import shutil

import numpy as np
import pytest
import torch
from fish_helpers import load
from voxfit.engine import Engine
from voxfit.engines.fish import engine as fish_torch
from voxfit.engines.fish.plugin import FishOptions
from voxfit.engines.fish.tiny import write_reference_wav
from voxfit.errors import EngineLoadError, ModelError, UsageError
from voxfit.options import validate_options


@pytest.fixture(scope="module")
def engine(fish_checkpoint):
    e = load(fish_checkpoint)
    yield e
    e.close()


def pcm(chunks):
    return np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2")


def test_loaded_weights_are_the_saved_ones(fish_checkpoint, engine):
    saved = torch.load(fish_checkpoint / "model.pth", weights_only=True)
    loaded = engine.llm.state_dict()
    params = dict(engine.llm.named_parameters())
    assert params and all(torch.equal(params[name], saved[name]) for name in params)
    codec_saved = torch.load(fish_checkpoint / "codec.pth", weights_only=True)
    # weight norm is folded by now; compare what survives unchanged: every non-conv parameter and buffer
    same = [k for k in codec_saved if k in engine.codec.state_dict()]
    assert len(same) > 100
    assert all(torch.equal(engine.codec.state_dict()[k], codec_saved[k]) for k in same)
    # the trap the loader avoids: fish-speech's default from_pretrained returns random weights
    from fish_speech.models.text2semantic.llama import BaseTransformer

    random_model = BaseTransformer.from_pretrained(str(fish_checkpoint))
    assert not torch.equal(random_model.embeddings.weight, loaded["embeddings.weight"])


def test_synthesis_gives_audio_at_the_codec_rate_and_of_plausible_length(engine):
    assert isinstance(engine, Engine) and engine.backend == "fish-torch"
    chunks = list(engine.synthesize("Hello from a tiny fish."))  # window by window as frames arrive
    assert chunks and all(c.sample_rate == engine.sample_rate == 44100 for c in chunks)
    tokens = sum(c.tokens for c in chunks)
    assert 0 < tokens < 16  # max_new_tokens bounds it (the last token is dropped, as fish-speech does)
    assert all(c.samples == c.tokens * 2048 for c in chunks)  # one semantic token is one codec frame
    assert np.abs(pcm(chunks)).max() > 0
    summary = engine.summary()
    assert summary["tokens"] >= tokens and summary["tokens_per_s"] > 0
    assert 0 < summary["rtf"] < float("inf") and summary["time_to_first_audio_s"] > 0


def test_max_new_tokens_scales_with_text_and_is_never_zero(fish_checkpoint):
    e = load(fish_checkpoint, max_new_tokens=None)
    try:
        short, long = e.max_tokens_for("Hi."), e.max_tokens_for("word " * 100)
        assert 0 < short < long and long >= 1.5 * len("word " * 100)
    finally:
        e.close()


def test_a_seed_makes_synthesis_reproducible(engine):
    first = pcm(engine.synthesize("Same words twice."))
    others, agains = [], []
    for _ in range(6):  # several rounds: the CPU flash attention kernel made a sample or two differ in most of them
        engine.configure(FishOptions(seed=1))
        try:
            others.append(pcm(engine.synthesize("Same words twice.")))
        finally:
            engine.configure(FishOptions())  # unset options return to the loaded engine's (seed 0)
        agains.append(pcm(engine.synthesize("Same words twice.")))
    assert all(np.array_equal(first, again) for again in agains)
    assert all(np.array_equal(others[0], other) for other in others)
    assert not np.array_equal(first, others[0])


def test_voice_cloning_from_a_reference_clip_and_its_transcript(fish_checkpoint, engine, tmp_path):
    # 22.05 kHz stereo: the loader downmixes and resamples to the codec's 44.1 kHz
    ref = write_reference_wav(tmp_path / "ref.wav", seconds=1.5, sample_rate=22050, channels=2)
    clone = load(fish_checkpoint, reference_audio=ref, reference_text="A steady hum.")
    try:
        clone.prepare()
        frames = -(-int(1.5 * 44100) // 2048)  # ceil: the codec pads to whole frames
        assert tuple(clone.prompt_tokens.shape) == (4, frames)
        again = clone.encode_reference(_ref_wave(ref))
        assert torch.equal(again, clone.prompt_tokens)  # eval mode: encoding is deterministic
        # Where the first generated token sits in the model's sequence tells how long the prompt was.
        # (Random weights give near-uniform logits, so the audio itself barely depends on the prompt.)
        plain_start = _first_position(engine, "Now in the reference voice.")
        clone_start = _first_position(clone, "Now in the reference voice.")
        assert clone_start - plain_start >= frames + len("A steady hum.")
        chunks = list(clone.synthesize("Now in the reference voice."))
        assert chunks[0].samples == chunks[0].tokens * 2048 > 0
        assert clone.reference_encode_s is not None
    finally:
        clone.close()


def _first_position(e, text):
    """Where the first generated token sits: the length of the prompt the engine queued for the batch."""
    seen, submit = [], e._submit

    def recording(text, voice, **kw):
        request = submit(text, voice, **kw)
        seen.append(int(request.prompt.shape[1]))
        return request

    e._submit = recording
    try:
        list(e.synthesize(text))
    finally:
        e._submit = submit
    return seen[0]


def _ref_wave(path):
    return fish_torch._read_reference(path, "x", 44100)


def test_configure_sets_the_reference_after_loading(fish_checkpoint, tmp_path):
    ref = write_reference_wav(tmp_path / "ref.wav", seconds=1.0)
    e = load(fish_checkpoint)
    try:
        cloned = FishOptions(reference_audio=str(ref), reference_text="A tone.")
        e.configure(cloned)
        list(e.synthesize("Hello."))
        assert e.prompt_tokens is not None and e.prompt_tokens.shape[0] == 4
        encoded = e.prompt_tokens
        e.configure(cloned)  # the same clip and transcript: not encoded again
        assert e.prompt_tokens is encoded
        e.configure(FishOptions())  # options unset: back to the voice the engine was loaded with
        assert e.prompt_tokens is None
        with pytest.raises(UsageError, match="option speaker does not apply to the fish-torch engine"):
            validate_options("fish-torch", FishOptions, {"speaker": "x"})
        with pytest.raises(UsageError, match="option temperature=5 for the fish-torch engine"):
            validate_options("fish-torch", FishOptions, {"temperature": 5})
    finally:
        e.close()


def test_missing_reference_audio_or_transcript_is_one_line(fish_checkpoint, tmp_path):
    with pytest.raises(ModelError, match="reference audio not found") as missing:
        load(fish_checkpoint, reference_audio=tmp_path / "nope.wav", reference_text="x")
    ref = write_reference_wav(tmp_path / "ref.wav", seconds=0.5)
    with pytest.raises(UsageError, match="needs its transcript") as no_text:
        load(fish_checkpoint, reference_audio=ref)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wav" * 10)
    with pytest.raises(ModelError, match="not a readable audio file") as bad:
        load(fish_checkpoint, reference_audio=tmp_path / "bad.wav", reference_text="x")
    for err in (missing, no_text, bad):
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precisions_load_and_speak(fish_checkpoint, precision, dtype):
    e = load(fish_checkpoint, precision=precision, max_new_tokens=6)
    try:
        assert {p.dtype for p in e.llm.parameters()} == {dtype}
        assert {p.dtype for p in e.codec.parameters()} == {dtype}
        e.prepare()
        assert e._batcher.decoder.k[0].dtype == dtype  # the batch's KV cache in the model's precision
        chunk = next(e.synthesize("Half precision."))
        assert chunk.samples == chunk.tokens * 2048 > 0
    finally:
        e.close()


def test_int8_weight_only_replaces_every_linear_and_stays_close(fish_checkpoint):
    ref = load(fish_checkpoint)
    e = load(fish_checkpoint, quantization="int8-weight-only", max_new_tokens=6)
    try:
        assert not any(isinstance(m, torch.nn.Linear) for m in e.llm.modules())
        q = e.llm.layers[0].attention.wqkv
        assert q.weight.dtype == torch.int8
        x = torch.randn(3, q.in_features)
        exact = ref.llm.layers[0].attention.wqkv(x)
        rel = (q(x) - exact).norm() / exact.norm()
        assert rel < 0.02  # one scale per output row: about 1% error
        chunk = next(e.synthesize("Eight bits."))
        assert chunk.samples == chunk.tokens * 2048 > 0
    finally:
        e.close()
        ref.close()


def test_compile_flag_routes_to_torch_compile_of_the_decode_step(fish_checkpoint):
    from fish_speech.models.text2semantic.inference import decode_one_token_ar

    plain = load(fish_checkpoint, clean=False)
    compiled = load(fish_checkpoint, clean=False, compile=True)
    try:
        assert plain.compiled is None and plain.decode_one_token is decode_one_token_ar
        assert compiled.compiled == "aot_eager"  # fish-speech's own choice off CUDA
        assert compiled.decode_one_token is not decode_one_token_ar
        assert getattr(compiled.decode_one_token, "_torchdynamo_orig_callable", None) is decode_one_token_ar
    finally:
        plain.close()
        compiled.close()


def test_a_path_naming_int8_does_not_take_fish_speechs_broken_quantized_branch(fish_checkpoint, tmp_path):
    copy = shutil.copytree(fish_checkpoint, tmp_path / "s1-int8-copy")
    e = load(copy)
    try:
        assert next(e.synthesize("Hello.")).tokens > 0
    finally:
        e.close()


@pytest.mark.parametrize(
    "damage,expected",
    [
        (lambda d: (d / "codec.pth").unlink(), "incomplete: missing codec.pth"),
        (lambda d: (d / "model.pth").write_bytes(b"\x00" * 4096), "model.pth is corrupt"),
        (lambda d: (d / "codec.pth").write_bytes(b"PK\x03\x04" + b"\x01" * 4096), "codec.pth is corrupt"),
        (lambda d: (d / "tokenizer.tiktoken").write_text("not base64 at all\n"), "cannot load the Fish Speech model"),
        (lambda d: torch.save({"embeddings.weight": torch.zeros(3, 3)}, d / "model.pth"),
         r"model.pth does not match config.json: \d+ missing weights .*; 1 shape mismatches \(embeddings.weight \[3, 3\]"),
        (lambda d: torch.save(_first_weight(d), d / "model.pth"), r"model.pth does not match config.json: \d+ missing weights \(\w"),
        (lambda d: torch.save({"encoder.x": torch.zeros(300)}, d / "codec.pth"), r"codec.pth does not match the codec config codec.yaml: \d+ missing weights .*; 1 unexpected weights \(encoder.x\)"),
    ],
    ids=["missing-codec", "corrupt-model", "corrupt-codec", "corrupt-tokenizer", "wrong-model", "partial-model",
         "wrong-codec"],
)
def test_missing_or_corrupt_files_give_a_one_line_model_error(fish_checkpoint, tmp_path, damage, expected):
    broken = shutil.copytree(fish_checkpoint, tmp_path / "broken")
    damage(broken)
    with pytest.raises(ModelError, match=expected) as err:
        load(broken)
    assert "\n" not in str(err.value)


def _first_weight(directory):
    saved = torch.load(directory / "model.pth", weights_only=True)
    return {"embeddings.weight": saved["embeddings.weight"]}


def test_unsupported_options_are_load_errors(fish_checkpoint):
    with pytest.raises(EngineLoadError, match="quantization 'int4'"):
        load(fish_checkpoint, quantization="int4")
    with pytest.raises(EngineLoadError, match="CPU in fp32 only"):
        load(fish_checkpoint, codec_backend="onnx", precision="bf16")
    with pytest.raises(EngineLoadError, match="CUDA is not available"):
        load(fish_checkpoint, device="cuda")


def test_an_external_decoder_replaces_the_torch_codec_for_decoding(fish_checkpoint):
    """What the MPS plugin's Core ML path does: decode through another runtime, same codes in, audio out."""
    e = load(fish_checkpoint)
    try:
        codes = e.generate_codes("External decoder.")
        reference = e.decode(codes)
        calls = []

        def decoder(array):
            calls.append(array.shape)
            assert isinstance(array, np.ndarray) and array.dtype.kind == "i"  # CPU integers, as Core ML takes
            return reference * 0.5

        e.replace_codec_decoder(decoder, backend="fish-torch+coreml-codec")
        assert e.backend == "fish-torch+coreml-codec" and e.codec_backend == "external"
        assert calls == [] and np.allclose(e.decode(codes), reference * 0.5)
        assert calls == [tuple(codes.shape)]
        chunks = list(e.synthesize("Through the external decoder."))
        assert len(calls) >= 2 and sum(c.samples for c in chunks) > 0
    finally:
        e.close()
