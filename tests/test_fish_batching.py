"""Fish Speech served to many at once and heard sooner, on the tiny checkpoint through the real loader.

* the batched decoder samples exactly as fish-speech's own loop does (same seed, same tokens);
* a request's tokens are the same alone and in a batch (each has its own generator);
* windows of streamed audio join to the one-shot decode of the same codes;
* a failing request fails alone, a request that leaves frees its slot, a batch never outgrows its slots.
"""

import itertools
import math
import threading
import time

import numpy as np
import pytest
import torch
from fish_helpers import load
from voxfit.engines.fish import batched, streaming
from voxfit.engines.fish.plugin import FishOptions
from voxfit.engines.fish.scheduler import Request
from voxfit.errors import UsageError

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def engine(fish_checkpoint):
    e = load(fish_checkpoint, max_new_tokens=40, batch_size=4)
    e.prepare()
    yield e
    e.close()


def pcm(chunks):
    return np.frombuffer(b"".join(c.pcm for c in chunks), dtype="<i2")


def _codes(engine, text, options=None):
    """The frames one request decodes, straight from the batch (no codec)."""
    request = engine._submit(text, engine._voice_for(options))
    return torch.stack(list(request.results(timeout=60)), dim=1)


@pytest.mark.parametrize("top_p", [0.8, 0.01])  # fish-speech's default sampling; near-greedy
def test_the_batched_decoder_samples_as_fish_speechs_own_loop(engine, top_p):
    options = FishOptions(seed=7, top_p=top_p)
    ours = _codes(engine, TEXT, options)
    engine.configure(options)
    try:
        torch.manual_seed(7)  # fish-speech samples from the global generator
        theirs = engine.generate_codes(TEXT)
    finally:
        engine.configure(FishOptions())
    assert ours.shape == theirs.shape and ours.shape[1] > 8
    assert torch.equal(ours, theirs)


def test_the_cpu_noise_is_the_bits_exponential_draws_from_the_same_generator():
    seqs = [batched.Sequence(slot=i, prompt_len=1, budget=1, sampling=batched.Sampling(
        0.8, 0.8, 1.1, torch.Generator().manual_seed(seed))) for i, seed in enumerate((0, 1, 12345))]
    reference = [torch.Generator().manual_seed(seed) for seed in (0, 1, 12345)]
    sizes = [4367, 1024, 1024, 1024]
    for _ in range(50):  # ~1.1 M draws
        noise = torch.cat(batched.draw_noise(seqs, sizes, "cpu"), dim=1)
        expected = torch.stack([torch.cat([torch.empty(n).exponential_(1, generator=g) for n in sizes])
                                for g in reference])
        assert noise.dtype == torch.float32 and torch.equal(noise, expected)


def test_noise_drawn_ahead_by_another_thread_is_the_noise_drawn_in_order(monkeypatch):
    """The batch's noise thread draws each sequence's next chunk while the step uses the current one: the
    step draws nothing itself, and the tokens get exponential_'s numbers in exponential_'s order."""
    sizes = [2**16, 2**15]  # 98,304 draws a token: 2 tokens a chunk, so 30 tokens cross 14 chunk seams
    wanted = threading.Event()
    supply = batched.NoiseSupply(torch.Generator().manual_seed(7), sizes, wanted=wanted.set)
    drawn_by: list[str] = []
    draw = batched.NoiseSupply._draw
    monkeypatch.setattr(batched.NoiseSupply, "_draw",
                        lambda self: (drawn_by.append(threading.current_thread().name), draw(self))[1])
    done = threading.Event()

    def filler() -> None:
        while not done.is_set():
            if wanted.wait(timeout=0.05):
                wanted.clear()
                supply.fill()

    thread = threading.Thread(target=filler, name="filler")
    supply.fill()  # as the submitting thread does
    thread.start()
    reference = torch.Generator().manual_seed(7)
    try:
        for _ in range(30):
            deadline = time.monotonic() + 5
            while supply._used == supply.tokens_per_chunk and not supply._ready and time.monotonic() < deadline:
                time.sleep(0.001)  # the filler is drawing the next chunk
            expected = torch.cat([torch.empty(n).exponential_(1, generator=reference) for n in sizes])
            assert torch.equal(supply.take(), expected)
    finally:
        done.set()
        thread.join(timeout=10)
    assert supply.tokens_per_chunk == 2 and set(drawn_by[1:]) == {"filler"}


def _fish_sample(row, temperature, top_p, penalty, window, seed):
    from fish_speech.models.text2semantic.inference import sample

    torch.manual_seed(seed)  # fish-speech draws its noise from the global generator
    settings = [torch.tensor(v, dtype=torch.bfloat16) for v in (temperature, top_p, penalty)]
    return int(sample(row[None, None].clone(), *settings, previous_tokens=window)[0])


@pytest.mark.parametrize("shape", ["flat", "peaked", "ties"])
def test_each_row_samples_the_token_fish_speechs_sampler_picks(shape):
    """The sampler's shortcuts (no sort when the candidate is inside the nucleus, or after excluding
    candidates outside it) against fish-speech's ``sample`` itself, row by row, on many distributions."""
    gen = torch.Generator().manual_seed({"flat": 1, "peaked": 2, "ties": 3}[shape])
    rows, vocab = 64, 1024
    logits = torch.randn(rows, vocab, generator=gen) * {"flat": 0.3, "peaked": 4.0, "ties": 1.0}[shape]
    if shape == "ties":
        logits = (logits * 2).round() / 2  # many tokens share a logit
    settings_list = [(float(t), float(p), float(r)) for t, p, r in zip(
        torch.empty(rows).uniform_(0.3, 1.2, generator=gen), torch.empty(rows).uniform_(0.05, 0.99, generator=gen),
        torch.empty(rows).uniform_(1.0, 1.5, generator=gen), strict=True)]
    windows = torch.randint(0, vocab, (rows, 16), generator=gen)
    seqs = [batched.Sequence(slot=i, prompt_len=1, budget=1, sampling=batched.Sampling(
        *settings_list[i], torch.Generator().manual_seed(100 + i))) for i in range(rows)]
    settings = torch.tensor([seq.sampling.rounded for seq in seqs])
    noise = batched.draw_noise(seqs, [vocab], "cpu")[0]
    ours = batched.sample_rows(logits, settings, windows, noise).tolist()
    theirs = [_fish_sample(logits[i], *settings_list[i], windows[i], 100 + i) for i in range(rows)]
    assert ours == theirs


def test_a_requests_tokens_are_the_same_alone_and_in_a_batch(engine):
    seeds = [1, 2, 3, 1]
    alone = [_codes(engine, TEXT, FishOptions(seed=s)) for s in seeds[:3]]
    results: dict[int, torch.Tensor] = {}

    def run(index: int) -> None:
        results[index] = _codes(engine, TEXT, FishOptions(seed=seeds[index]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    before = engine._batcher.largest_batch
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert engine._batcher.largest_batch >= 2 or before >= 2  # they decoded together
    for i, seed in enumerate(seeds):
        assert torch.equal(results[i], alone[seeds.index(seed)]), f"request {i} (seed {seed}) differs in the batch"
    assert not torch.equal(results[0], results[1])  # different seeds, different tokens


def test_a_row_in_a_batch_computes_what_it_computes_alone_up_to_the_kernels_rounding(engine):
    """A matrix product of 4 rows is not 4 products of one row: the CPU kernels sum in another order,
    so a row's logits in a batch may differ from its logits alone in the last bits, and by no more.
    A token can then differ only where the sampler's choice is a tie at that rounding (the tokens
    above never did); a row mixed up with another, or read at another position, differs by far more."""
    decoder = batched.BatchedDecoder(engine.llm, 4, torch.float32, "cpu")
    gen = torch.Generator().manual_seed(5)
    inp = torch.randint(0, 64, (4, decoder.codebooks + 1, 1), generator=gen)
    inp[:, 0, 0] = torch.tensor([300, 301, decoder.semantic_begin + 5, decoder.semantic_begin + 9])
    pos = torch.tensor([[3], [17], [40], [63]])
    with torch.inference_mode():
        logits, hidden = decoder._slow(inp, torch.arange(4), slice(0, 4), pos)
        for row in range(4):
            alone, alone_hidden = decoder._slow(inp[row:row + 1], torch.tensor([row]), slice(row, row + 1),
                                                pos[row:row + 1])
            for ours, theirs in ((logits[row], alone[0]), (hidden[row], alone_hidden[0])):
                assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max() + 1e-6, row
        mixed, _ = decoder._slow(inp[1:2], torch.tensor([0]), slice(0, 1), pos[1:2])
    assert (mixed[0] - logits[0]).abs().max() > 1e-3  # the bound tells rounding from a real difference


def test_streamed_windows_join_to_the_one_shot_decode(engine):
    codes = _codes(engine, TEXT, FishOptions(seed=3, max_new_tokens=80))
    whole = engine.decode(codes)
    frames = [codes[:, i] for i in range(codes.shape[1])]
    for first in (8, 13, codes.shape[1]):
        pieces = list(streaming.windows(iter(frames), lambda codes, context, last: engine.decode_window(codes, context),
                                        streaming.WindowPlan(first=first)))
        assert sum(n for _, n in pieces) == codes.shape[1]
        assert pieces[0][1] == min(first, codes.shape[1])
        joined = np.concatenate([w for w, _ in pieces])
        assert joined.shape == whole.shape
        assert np.abs(joined - whole).max() < 1e-4  # the seams: rounding, not audible


def test_a_window_decodes_only_the_context_the_codecs_convolutions_read(engine, monkeypatch):
    """The convolutional decoder reads 5 frames before a window (its receptive field, computed from its
    layers): with them its audio is the audio the whole context gives; with one frame fewer it is not."""
    from voxfit.engines.fish import codec as fish_codec

    reach = fish_codec.decoder_context_frames(engine.codec)
    assert reach == 5  # S1's decoder: 7-tap convolutions, dilations 1-3-9, upsampling 8-8-4-2
    codes = _codes(engine, TEXT, FishOptions(seed=3, max_new_tokens=80))
    assert codes.shape[1] >= 60
    window = codes[:, 30 - streaming.CONTEXT_FRAMES:60]
    read = []
    hook = engine.codec.decoder.register_forward_pre_hook(lambda module, args: read.append(args[0].shape[-1]))
    try:
        ours = engine.decode_window(window, streaming.CONTEXT_FRAMES)
    finally:
        hook.remove()
    assert read == [(30 + reach) * fish_codec.latent_per_frame(engine.codec)]  # 35 frames decoded, not 46
    monkeypatch.setattr(engine, "_reach", (streaming.CONTEXT_FRAMES, engine._reach[1]))
    everything = engine.decode_window(window, streaming.CONTEXT_FRAMES)
    monkeypatch.setattr(engine, "_reach", (reach - 1, engine._reach[1]))
    short = engine.decode_window(window, streaming.CONTEXT_FRAMES)
    assert ours.shape == everything.shape == (30 * engine.samples_per_frame,)
    assert np.abs(ours - everything).max() < 1e-6
    assert np.abs(short - everything).max() > 1e-5


def test_the_engine_streams_the_audio_of_its_codes(engine):
    options = FishOptions(seed=5, max_new_tokens=60)
    chunks = list(engine.synthesize_with(TEXT, options))
    assert len(chunks) >= 2  # audio came before the sentence was done
    codes = _codes(engine, TEXT, options)
    one_shot = (np.clip(engine.decode(codes), -1, 1) * 32767).astype("<i2")
    streamed = pcm(chunks)
    assert streamed.shape == one_shot.shape
    assert np.abs(streamed.astype(int) - one_shot).max() <= 1  # one LSB of 16-bit rounding at most


def test_the_first_window_waits_longer_on_a_slower_device():
    fast = streaming.first_window(100, tokens_per_s=200.0)
    real_time = streaming.first_window(100, tokens_per_s=streaming.FRAMES_PER_SECOND)
    slow = streaming.first_window(100, tokens_per_s=5.0)
    assert fast == streaming.SMALLEST_FIRST
    assert fast < real_time < slow <= 150  # never more than the sentence
    # slower than real time by a factor: playback cannot starve if the first window covers that share
    expected = 100 * streaming.FRAMES_PER_CHARACTER
    assert slow >= expected * (1 - 5.0 * streaming.SPEED_MARGIN / streaming.FRAMES_PER_SECOND)


@pytest.mark.parametrize("tokens_per_s", [3.0, 10.0, 21.5, 30.0, 45.0, 170.0, 2000.0])
def test_planned_windows_never_let_playback_starve(tokens_per_s):
    """Frames made at the plan's trusted speed, played at the codec's rate: each window is out before
    playback reaches its first frame, for every sentence the plan expects (any length when the device
    keeps up); windows stay within their bounds, and a fast device needs few of them."""
    speed = tokens_per_s * streaming.SPEED_MARGIN
    rate = streaming.FRAMES_PER_SECOND
    for chars in (5, 40, 70, 200):
        plan = streaming.plan_windows(chars, tokens_per_s)
        expected = math.ceil(chars * streaming.FRAMES_PER_CHARACTER)
        lengths = [expected] if speed < rate else [expected, 4 * expected, 1000]
        for frames in lengths:
            made, start, sizes = 0, None, plan.sizes()
            while made < frames:
                size = next(sizes)
                assert streaming.SMALLEST_FIRST <= size <= streaming.LARGEST_WINDOW or made == 0
                ready = min(frames, made + size) / speed  # when this window's last frame is made
                if start is None:
                    start = ready  # playback starts with the first window
                else:
                    assert ready <= start + made / rate + 1e-9, (chars, frames, made, size)
                made += size
    if speed >= 4 * rate:  # a fast device reaches the largest window by the third: little context decoded twice
        assert list(itertools.islice(streaming.plan_windows(70, tokens_per_s).sizes(), 3))[2] == \
            streaming.LARGEST_WINDOW


def test_a_request_that_fails_in_the_batch_fails_alone(engine):
    good = engine._voice_for(FishOptions(seed=2))
    expected = _codes(engine, TEXT, FishOptions(seed=2))
    bad_prompt, masks, parts = batched.encode_prompt(engine.llm, TEXT, None, None)
    bad_prompt = bad_prompt.clone()
    bad_prompt[0, 0] = 10**9  # no such token: its prefill raises inside the batch thread
    bad = Request(prompt=bad_prompt, audio_masks=masks, audio_parts=parts, budget=30,
                  sampling=batched.Sampling(0.8, 0.8, 1.1, torch.Generator().manual_seed(0)))
    first = engine._submit(TEXT, good)
    engine._batcher.submit(bad)
    second = engine._submit(TEXT, good)
    with pytest.raises(IndexError):
        list(bad.results(timeout=60))
    assert torch.equal(torch.stack(list(first.results(timeout=60)), dim=1), expected)
    assert torch.equal(torch.stack(list(second.results(timeout=60)), dim=1), expected)


def test_a_text_too_long_for_the_model_is_a_usage_error_for_that_request_only(engine):
    with pytest.raises(UsageError, match="too long for this model"):
        list(engine.synthesize_with("word " * 80, FishOptions(seed=1)))
    assert pcm(engine.synthesize_with(TEXT, FishOptions(seed=1))).size > 0


def test_a_request_that_leaves_frees_its_slot_at_the_next_step(fish_checkpoint):
    e = load(fish_checkpoint, max_new_tokens=400, batch_size=1)
    try:
        stream = e.synthesize_with(TEXT, FishOptions(seed=1, max_new_tokens=400))
        next(stream)  # the first window: the request is in the batch now
        stream.close()  # the client left
        steps = e._batcher.steps
        deadline = time.monotonic() + 10
        while e._batcher._active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not e._batcher._active and e._batcher.steps - steps <= 2
        assert len(e._batcher._free) == 1  # its slot is free again
        assert pcm(e.synthesize_with("Next one.", FishOptions(seed=1, max_new_tokens=20))).size > 0
    finally:
        e.close()


def test_a_batch_never_outgrows_its_slots(fish_checkpoint):
    e = load(fish_checkpoint, max_new_tokens=30, batch_size=2)
    try:
        e.prepare()
        results = []
        threads = [threading.Thread(target=lambda s=s: results.append(pcm(e.synthesize_with(TEXT, FishOptions(seed=s)))))
                   for s in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(results) == 5 and all(r.size > 0 for r in results)
        assert e._batcher.largest_batch == 2
        assert e._batcher.decoder.k[0].shape[0] == 2  # the KV cache holds the planned slots, no more
    finally:
        e.close()


def test_a_compiled_batched_decoder_gives_the_same_tokens(fish_checkpoint, engine):
    compiled = load(fish_checkpoint, max_new_tokens=12, batch_size=2, compile=True)
    try:
        compiled.prepare()
        assert getattr(compiled._batcher.decoder._slow, "_torchdynamo_orig_callable", None) is not None
        assert any("batched decoder compiled (aot_eager" in n for n in compiled.notes)
        options = FishOptions(seed=4, max_new_tokens=12)
        assert torch.equal(_codes(compiled, TEXT, options), _codes(engine, TEXT, options))
    finally:
        compiled.close()


@pytest.mark.parametrize("busy, most", [(True, 1), (False, 2)])
def test_codec_windows_take_turns_while_the_batch_decodes_and_share_the_cores_after(busy, most):
    from voxfit.engines.fish.scheduler import CodecTurns

    turns = CodecTurns(lambda: busy, idle=2)
    running, seen, lock = [0], [], threading.Lock()

    def window() -> None:
        with turns.turn():
            with lock:
                running[0] += 1
                seen.append(running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1

    threads = [threading.Thread(target=window) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(seen) == 4 and max(seen) == most


def test_a_responses_last_window_goes_before_windows_in_mid_sentence():
    """The window decoded after a sentence ended is all its client waits for: it takes the next turn
    even when a mid-sentence window has waited longer."""
    from voxfit.engines.fish.scheduler import CodecTurns

    turns = CodecTurns(lambda: True, idle=2)
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with turns.turn():
            holding.set()
            release.wait(timeout=10)

    def window(name: str, last: bool) -> None:
        with turns.turn(last):
            order.append(name)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    assert holding.wait(timeout=10)
    for name, last in (("mid-sentence", False), ("last", True)):
        threads.append(threading.Thread(target=window, args=(name, last)))
        threads[-1].start()
        time.sleep(0.1)  # each is waiting before the next comes
    release.set()
    for t in threads:
        t.join(timeout=10)
    assert order == ["last", "mid-sentence"]


def test_windows_waiting_beside_a_busy_batch_go_side_by_side_once_it_is_idle():
    """No timer wakes a waiting window (a poll takes the interpreter's lock from the batch loop hundreds
    of times a second): the batch going idle does, and the window runs beside the one still decoding."""
    from voxfit.engines.fish.scheduler import CodecTurns

    busy = [True]
    turns = CodecTurns(lambda: busy[0], idle=2)
    holding, release, entered = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with turns.turn():
            holding.set()
            release.wait(timeout=10)

    def waiter() -> None:
        with turns.turn():
            entered.set()

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    threads[0].start()
    assert holding.wait(timeout=10)
    threads[1].start()
    assert not entered.wait(timeout=0.2)  # one window at a time while the batch decodes
    busy[0] = False
    assert not entered.wait(timeout=0.2)  # the batch went idle, but no one said so: nothing polls
    turns.batch_went_idle()
    assert entered.wait(timeout=5)  # beside the holder, which still holds its turn
    release.set()
    for t in threads:
        t.join(timeout=10)


def test_the_batch_loop_says_when_it_runs_out_of_sequences(fish_checkpoint):
    e = load(fish_checkpoint, max_new_tokens=12, batch_size=2)
    try:
        e.prepare()
        idle = threading.Event()
        e._batcher.on_idle = idle.set
        request = e._submit(TEXT, e._voice_for(None))
        frames = list(request.results(timeout=60))
        assert frames and idle.wait(timeout=10) and not e._batcher.busy
    finally:
        e.close()


def test_the_prompt_is_tokenized_in_the_callers_thread_with_tiktokens_own_tokens(engine):
    """fish-speech's tokenizer calls tiktoken's encode_batch, which starts a pool of threads per call."""
    tokenizer = engine.llm.tokenizer
    text = "Hello there <|im_end|> and again, " * 3
    expected = tokenizer.tkt_model.encode(text, allowed_special=tokenizer.tkt_model.special_tokens_set,
                                          disallowed_special=set())
    before = threading.active_count()
    started = []
    original = threading.Thread.start
    threading.Thread.start = lambda self: (started.append(self), original(self))[1]  # type: ignore[method-assign]
    try:
        tokens = tokenizer.encode(text)
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    assert tokens == expected and not started and threading.active_count() == before


def test_the_batch_step_leaves_drawing_its_noise_to_other_threads(fish_checkpoint, monkeypatch):
    draw = batched.NoiseSupply._draw
    drawn_by: list[str] = []
    monkeypatch.setattr(batched.NoiseSupply, "_draw",
                        lambda self: (drawn_by.append(threading.current_thread().name), draw(self))[1])
    e = load(fish_checkpoint, max_new_tokens=100, batch_size=2, seed=3)
    try:
        e.prepare()
        request = e._submit(TEXT, e._voice_for(None))
        frames = list(request.results(timeout=60))
    finally:
        e.close()
    per_chunk = request.sampling.noise.tokens_per_chunk
    assert len(frames) > 2 * per_chunk  # the sequence used three chunks or more
    assert drawn_by[0] == threading.current_thread().name  # the first, as it was submitted
    # every next one by the noise thread, while the step used the one before (35 steps to draw it in)
    assert drawn_by[1:] == ["voxfit-fish-noise"] * (len(drawn_by) - 1) and len(drawn_by) >= 3
