"""Fish Speech's dual-AR decoder for several sequences at once, each at its own position.

fish-speech's own step (``decode_one_token_ar``) runs a batch of one: its KV
cache and positions are shared by the whole batch. This module runs the same
model, with the same weights and the same arithmetic, for ``n`` sequences
that joined at different times: one KV cache row (a *slot*) per sequence, a
position per row, a mask per row. Decoding is memory-bound (every step reads
every weight once), so a step for four sequences costs little more than a
step for one.

What is fish-speech's, kept on purpose so that a sequence decodes here as it
would there: the prompt's encoding, the embedding of the codebooks, the
sampling (repetition penalty over a 16-token window, top-p, temperature, with
its settings rounded to bfloat16 as ``generate`` rounds them), the fast
transformer's plain attention, the rule that drops the last generated token.
What is ours: per-row positions and masks, one random generator per sequence
(so a request's seed gives the same tokens alone or in a batch).
"""

from __future__ import annotations

import collections
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from voxfit.engines.fish.attention import math_attention

#: fish-speech's repetition-penalty window (``decode_n_tokens``).
PENALTY_WINDOW = 16
#: residual codebooks are sampled from the first 1024 logits of the fast head (fish-speech's constant).
RESIDUAL_CODES = 1024
#: CPU noise drawn at once for a sequence, in elements (1 MiB of float32): whole tokens, 35 of the tiny
#: checkpoint's 7,439 draws each, one of S1's ~160,000
NOISE_CHUNK = 2**18


@dataclass
class Sampling:
    """One sequence's sampling settings and its own random generator."""

    temperature: float
    top_p: float
    repetition_penalty: float
    generator: Any
    noise: Optional["NoiseSupply"] = None  # on the CPU: its noise, drawn ahead (made at the first draw if unset)

    def __post_init__(self) -> None:
        # fish-speech's ``generate`` hands its settings to the sampler as bfloat16 tensors: round them the same way
        values = torch.tensor([self.temperature, self.top_p, self.repetition_penalty], dtype=torch.bfloat16)
        self.rounded: list[float] = values.float().tolist()


@dataclass(eq=False)
class Sequence:
    """A sequence being decoded in one slot."""

    slot: int
    prompt_len: int
    budget: int  # tokens it may generate, the first (prefill) token included
    sampling: Sampling
    last: Any = None  # the latest token [codebooks + 1]
    generated: int = 0  # tokens generated so far, the first included
    done: bool = False
    codes: list[Any] = field(default_factory=list)  # [num_codebooks] per frame, ready for the codec


def _rotary(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """fish-speech's ``apply_rotary_emb`` with one row of frequencies per sequence: freqs [b, s, d/2, 2]."""
    xs = x.float().reshape(*x.shape[:-1], -1, 2)
    f = freqs.view(freqs.shape[0], xs.size(1), 1, xs.size(3), 2)
    out = torch.stack([xs[..., 0] * f[..., 0] - xs[..., 1] * f[..., 1],
                       xs[..., 1] * f[..., 0] + xs[..., 0] * f[..., 1]], -1)
    return out.flatten(3).type_as(x)


def _projected(attn: Any, x: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fish-speech's Attention up to its cache: q, k, v [b, heads, s, d] of x [b, s, dim], rotated by freqs."""
    b, s, _ = x.shape
    q_size, kv_size = attn.n_head * attn.head_dim, attn.n_local_heads * attn.head_dim
    q, k, v = attn.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
    q = q.view(b, s, attn.n_head, attn.head_dim)
    k = k.view(b, s, attn.n_local_heads, attn.head_dim)
    v = v.view(b, s, attn.n_local_heads, attn.head_dim)
    if attn.attention_qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = _rotary(q, freqs), _rotary(k, freqs)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


class BatchedDecoder:
    """The model's decode loop for up to ``slots`` sequences; one thread drives it."""

    def __init__(self, model: Any, slots: int, dtype: Any, device: str) -> None:
        config = model.config
        self.model, self.slots, self.device = model, slots, device
        self.codebooks = config.num_codebooks
        shape = (slots, config.n_local_heads, config.max_seq_len, config.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in model.layers]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in model.layers]
        # each slot's last PENALTY_WINDOW tokens (every codebook), token j of a sequence in column j % window:
        # the repetition penalty's window, written once a step for the whole batch
        self.recent = torch.zeros((slots, config.num_codebooks + 1, PENALTY_WINDOW), dtype=torch.int, device=device)
        self._fast_shape = (config.fast_n_local_heads, config.num_codebooks, config.fast_head_dim)
        self.noise_sizes = [config.vocab_size] + [RESIDUAL_CODES] * (config.num_codebooks - 1)  # one token's
        self.im_end = model.tokenizer.get_token_id("<|im_end|>")
        self.semantic_begin = model.tokenizer.semantic_begin_id
        self.semantic_end = model.tokenizer.semantic_end_id

    def compile(self, backend: str) -> None:
        """torch.compile the slow transformer's pass and one fast layer, for any batch and length (dynamic
        shapes: the batch changes as requests join and leave). No CUDA graphs: they need fixed shapes."""
        self._slow = torch.compile(self._slow, backend=backend, dynamic=True)  # type: ignore[method-assign]
        self._fast_layer = torch.compile(self._fast_layer, backend=backend, dynamic=True)  # type: ignore[method-assign]

    # -- the slow transformer ----------------------------------------------

    def _embed(self, inp: torch.Tensor, audio_masks: Any = None, audio_parts: Any = None) -> torch.Tensor:
        """fish-speech's ``forward_generate`` embedding: text token plus its codebooks. inp [b, K+1, s]."""
        m, c = self.model, self.model.config
        embeds = [m.codebook_embeddings(inp[:, i + 1] + i * c.codebook_size) for i in range(c.num_codebooks)]
        vq_sum = torch.stack(embeds, dim=1).sum(dim=1)
        vq_masks = (inp[:, 0] >= self.semantic_begin) & (inp[:, 0] <= self.semantic_end)
        vq_sum[~vq_masks] = 0
        x = m.embeddings(inp[:, 0]) + vq_sum
        if c.scale_codebook_embeddings:
            x = torch.where(vq_masks.unsqueeze(-1).expand_as(x), x / math.sqrt(c.num_codebooks + 1), x)
        if audio_parts is not None:
            audio = m.audio_projector(audio_parts)
            x[audio_masks] = audio / math.sqrt(2) if c.scale_codebook_embeddings else audio
        return x

    def _attention(self, layer_index: int, attn: Any, x: torch.Tensor, slots: torch.Tensor, span: Optional[slice],
                   pos: torch.Tensor, freqs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One slow attention: x [b, s, dim] at positions pos [b, s] of slots [b] (``span``: the same slots
        as a range, when they are one); keys up to the mask's length."""
        b, s, _ = x.shape
        q, k, v = _projected(attn, x, freqs)
        cache_k, cache_v = self.k[layer_index], self.v[layer_index]
        rows = slots[:, None].expand(b, s)
        cache_k[rows, :, pos] = k.transpose(1, 2)
        cache_v[rows, :, pos] = v.transpose(1, 2)
        length = mask.shape[-1]
        rows_of = span if span is not None else slots  # a range reads the cache in place; a gather copies it
        keys, values = cache_k[rows_of, :, :length], cache_v[rows_of, :, :length]
        repeat = attn.n_head // attn.n_local_heads
        keys, values = keys.repeat_interleave(repeat, dim=1), values.repeat_interleave(repeat, dim=1)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return attn.wo(y.transpose(1, 2).contiguous().view(b, s, attn.n_head * attn.head_dim))

    def _slow(self, inp: torch.Tensor, slots: torch.Tensor, span: Optional[slice], pos: torch.Tensor,
              audio_masks: Any = None, audio_parts: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [b, vocab] and fast-transformer input [b, fast_dim] for the last position of each row."""
        m = self.model
        x = self._embed(inp, audio_masks, audio_parts)
        length = int(pos.max()) + 1
        freqs = m.freqs_cis[pos]  # [b, s, d/2, 2]: each row at its own positions
        mask = torch.arange(length, device=x.device)[None, None, None, :] <= pos[:, None, :, None]
        with math_attention():  # as fish-speech decodes (its flags shared safely with the codec's threads)
            for index, layer in enumerate(m.layers):
                h = x + self._attention(index, layer.attention, layer.attention_norm(x), slots, span, pos, freqs, mask)
                x = h + layer.feed_forward(layer.ffn_norm(h))
        x = x[:, -1:]
        out = m.norm(x)
        logits = F.linear(out, m.embeddings.weight) if m.config.tie_word_embeddings else m.output(out)
        return logits[:, -1], m.fast_project_in(x)[:, -1]

    # -- the fast transformer ------------------------------------------------

    def _fast_layer(self, layer: Any, x: torch.Tensor, caches: tuple[torch.Tensor, torch.Tensor],
                    position: int) -> torch.Tensor:
        attn, b = layer.attention, x.shape[0]
        q, k, v = _projected(attn, layer.attention_norm(x), self.model.fast_freqs_cis[position].view(1, 1, -1, 2))
        cache_k, cache_v = caches
        cache_k[:, :, position] = k[:, :, 0]
        cache_v[:, :, position] = v[:, :, 0]
        repeat = attn.n_head // attn.n_local_heads
        keys, values = cache_k.repeat_interleave(repeat, dim=1), cache_v.repeat_interleave(repeat, dim=1)
        mask = self.model.causal_mask[None, None, position:position + 1, :self.codebooks]
        y = attn.eq_scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # fish-speech's, as its fast layers
        h = x + attn.wo(y.transpose(1, 2).contiguous().view(b, 1, attn.n_head * attn.head_dim))
        return h + layer.feed_forward(layer.ffn_norm(h))

    def _fast(self, hidden: torch.Tensor, first: torch.Tensor, settings: torch.Tensor,
              windows: Optional[torch.Tensor], noise: list[torch.Tensor]) -> torch.Tensor:
        """The residual codebooks [b, K-1] after the semantic token ``first`` [b], one fast pass per codebook."""
        m, b = self.model, hidden.shape[0]
        caches = [(torch.zeros((b, *self._fast_shape), dtype=hidden.dtype, device=hidden.device),
                   torch.zeros((b, *self._fast_shape), dtype=hidden.dtype, device=hidden.device))
                  for _ in m.fast_layers]
        x = hidden.view(b, 1, -1)
        for index, layer in enumerate(m.fast_layers):  # position 0: the slow transformer's output
            x = self._fast_layer(layer, x, caches[index], 0)
        # fish-speech maps a non-semantic token below the semantic range to code 0; one above it (a model whose
        # vocabulary is larger than its tokenizer's, e.g. random weights) would index past the codebook there
        code = (first - self.semantic_begin).clamp(min=0, max=m.config.codebook_size - 1)
        codes = [code]
        for position in range(1, self.codebooks):
            x = m.fast_embeddings(code).view(b, 1, -1)
            for index, layer in enumerate(m.fast_layers):
                x = self._fast_layer(layer, x, caches[index], position)
            logits = _leading_outputs(m.fast_output, m.fast_norm(x)[:, -1], RESIDUAL_CODES)
            window = windows[:, position + 1] if windows is not None else None
            code = sample_rows(logits, settings, window, noise[position - 1])
            codes.append(code)
        return torch.stack(codes, dim=1)

    # -- steps ---------------------------------------------------------------

    def prefill(self, seq: Sequence, prompt: torch.Tensor, audio_masks: Any = None, audio_parts: Any = None) -> None:
        """Run a sequence's prompt [K+1, T] through its slot and sample its first token (no penalty yet)."""
        t = prompt.shape[1]
        pos = torch.arange(t, device=prompt.device)[None]
        slots = torch.tensor([seq.slot], device=prompt.device)
        self.recent[seq.slot] = 0  # fish-speech's window starts as zeros, penalised as tokens
        logits, hidden = self._slow(prompt[None], slots, slice(seq.slot, seq.slot + 1), pos, audio_masks, audio_parts)
        self._advance([seq], slots, logits, hidden, windows=None)

    def step(self, seqs: list[Sequence]) -> None:
        """One token for every sequence in ``seqs`` (none of them done)."""
        device = self.device
        seqs = sorted(seqs, key=lambda s: s.slot)  # rows are independent: in slot order, often one range
        numbers = [s.slot for s in seqs]
        span = slice(numbers[0], numbers[-1] + 1) if numbers[-1] - numbers[0] == len(numbers) - 1 else None
        inp = torch.stack([s.last for s in seqs])[:, :, None]  # [b, K+1, 1]
        slots = torch.tensor(numbers, device=device)
        pos = torch.tensor([[s.prompt_len + s.generated - 1] for s in seqs], device=device)
        logits, hidden = self._slow(inp, slots, span, pos)
        self._advance(seqs, slots, logits, hidden, windows=self.recent[slots])  # [b, K+1, 16]

    def _advance(self, seqs: list[Sequence], slots: torch.Tensor, logits: torch.Tensor, hidden: torch.Tensor,
                 windows: Optional[torch.Tensor]) -> None:
        """Sample each sequence's next token, every codebook, and take it into its window and its codes.
        ``windows``: the sequences' penalty windows in ring order (None at the prompt: no penalty)."""
        settings = torch.tensor([s.sampling.rounded for s in seqs], device=logits.device)  # [b, 3], once a step
        noise = draw_noise(seqs, self.noise_sizes, logits.device)
        first = sample_rows(logits, settings, _first_frames(seqs, windows), noise[0])
        residual = self._fast(hidden, first, settings, windows, noise[1:])
        tokens = torch.cat([first[:, None], residual], dim=1)  # [b, K+1]
        if windows is not None:  # the first token (at the prompt) never enters the window, as in fish-speech
            columns = torch.tensor([(s.generated - 1) % PENALTY_WINDOW for s in seqs], device=tokens.device)
            self.recent[slots, :, columns] = tokens
        ends = tokens[:, 0].tolist()
        for seq, token, end in zip(seqs, tokens.unbind(0), ends, strict=True):
            if seq.last is not None:  # fish-speech drops the last token generated: keep each one a step late
                seq.codes.append(seq.last[1:])  # a view: a step's tokens are never written again
            seq.last, seq.generated = token, seq.generated + 1
            if end == self.im_end or seq.generated >= seq.budget:
                seq.done = True


def _first_frames(seqs: list[Sequence], windows: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The oldest frame of each sequence's window, every codebook [b, K+1]: fish-speech penalises the
    semantic token with its window's first column (``previous_tokens[:, 0]``), kept as it is so that a
    sequence samples as it would there. Its window holds tokens ``start .. start + 16`` (``start`` is 0
    until 16 tokens follow the first, then trails by 16), so the oldest sits in column ``start % 16``."""
    if windows is None:
        return None
    oldest = [max(0, s.generated - 1 - PENALTY_WINDOW) % PENALTY_WINDOW for s in seqs]
    rows = torch.arange(len(seqs), device=windows.device)
    return windows[rows, :, torch.tensor(oldest, device=windows.device)]


def _leading_outputs(linear: Any, x: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` outputs of a bias-free linear layer, computed alone: the residual codebooks are
    sampled from the fast head's first 1024 logits (of 4096), so the rest need not be computed. A layer
    that is not a plain ``nn.Linear`` (quantized) computes them all and is cut."""
    if type(linear) is torch.nn.Linear and linear.bias is None:
        return F.linear(x, linear.weight[:n])
    return linear(x)[..., :n]


class NoiseSupply:
    """One sequence's exponential noise on the CPU, drawn ahead from its own generator a chunk of whole
    tokens at a time.

    A token's draws are a sixth of a tiny model's step, and they are per row: drawn inside the step,
    they make a batch's step slower for each sequence it holds. :meth:`fill` draws the next chunk from
    another thread (the batch's noise thread, or the thread that submitted the request), beside the
    step: the random numbers and the logarithm run with the interpreter's lock released. The chunks are
    drawn one after another from the one generator whoever draws them, and used in that order, so a
    token gets the numbers it would get drawn alone (``tests/test_fish_batching.py`` compares them).
    """

    def __init__(self, generator: Any, sizes: list[int], wanted: Optional[Callable[[], None]] = None) -> None:
        self.generator, self.total = generator, sum(sizes)
        self.tokens_per_chunk = max(1, NOISE_CHUNK // self.total)
        self._wanted = wanted  # told when no chunk is ready any more: a thread that fills may draw one
        self._lock = threading.Lock()
        self._ready: collections.deque[torch.Tensor] = collections.deque()
        self._current: Optional[torch.Tensor] = None
        self._used = 0

    def fill(self) -> None:
        """Draw the next chunk, unless one is ready."""
        with self._lock:
            if not self._ready:
                self._ready.append(self._draw())

    def take(self) -> torch.Tensor:
        """The next token's noise [total], every codebook's draws in fish-speech's order."""
        if self._current is None or self._used == len(self._current):
            with self._lock:
                self._current = self._ready.popleft() if self._ready else self._draw()
            self._used = 0
            if self._wanted is not None:
                self._wanted()
        row = self._current[self._used]
        self._used += 1
        return row

    def _draw(self) -> torch.Tensor:
        uniform = torch.rand(self.tokens_per_chunk * self.total, dtype=torch.float64, generator=self.generator)
        return _exponential_from_uniform(uniform).view(self.tokens_per_chunk, self.total)


def noise_drawn_ahead(device: Any) -> bool:
    """Whether a sequence's noise on ``device`` comes from a :class:`NoiseSupply` drawn ahead: on the CPU; on
    an accelerator it is drawn on the device, in the step."""
    return torch.device(device).type == "cpu"


def draw_noise(seqs: list[Sequence], sizes: list[int], device: Any) -> list[torch.Tensor]:
    """Each row's exponential noise for one token, every codebook at once: [b, size] per codebook.

    fish-speech draws one tensor per codebook from one generator, one after another; one draw of their
    total length from the same generator yields the same numbers in the same order (checked on the CPU
    by ``tests/test_fish_batching.py``, which compares tokens with fish-speech's own). On the CPU, a
    sequence's :class:`NoiseSupply` draws many tokens' worth at once, ahead of the step.
    """
    total = sum(sizes)
    if noise_drawn_ahead(device):
        for seq in seqs:
            if seq.sampling.noise is None:
                seq.sampling.noise = NoiseSupply(seq.sampling.generator, sizes)
        rows = torch.stack([seq.sampling.noise.take() for seq in seqs])  # type: ignore[union-attr]
    else:
        rows = torch.stack([torch.empty(total, device=device).exponential_(1, generator=seq.sampling.generator)
                            for seq in seqs])
    return list(torch.split(rows, sizes, dim=1))


def _exponential_from_uniform(uniform: torch.Tensor) -> torch.Tensor:
    """What ``exponential_(1)`` makes on the CPU from the same generator, at a third of its cost.

    PyTorch's CPU kernel draws, element by element, a double uniform (53 random bits, as ``rand`` in
    float64 draws it) and returns ``float(-log1p(-u))``; here the draw is the same and the logarithm runs
    over the whole batch at once, through numpy's ``log1p`` (half the time of torch's on the same doubles).
    The results are bit-identical (``tests/test_fish_batching.py`` compares millions of draws), so a seed
    still gives fish-speech's tokens.
    """
    import numpy as np

    values = uniform.numpy()
    np.negative(values, out=values)
    np.log1p(values, out=values)
    np.negative(values, out=values)
    return torch.from_numpy(values).float()


def sample_rows(logits: torch.Tensor, settings: torch.Tensor, window: Optional[torch.Tensor],
                noise: torch.Tensor) -> torch.Tensor:
    """fish-speech's ``sample`` for each row of logits [b, V], each row with its settings [b, 3] (temperature,
    top_p, repetition penalty, rounded as fish-speech rounds them) and its own noise.

    fish-speech sorts the whole vocabulary to find the top-p nucleus, then takes ``argmax(probs / noise)``
    over it. The sort is most of a small model's step, and mostly unneeded: when the argmax over the whole
    vocabulary falls inside the nucleus, it is the argmax over the nucleus too. When it falls clearly
    outside, so does every token ranked at or below it, and the argmax over the tokens ranked above it is
    the next candidate (a draw from a smaller set that holds the nucleus: usually one more pass). A row
    sorts only when its candidate sits so near the nucleus' edge that rounding could decide, or shares its
    logit with another token (the sort's order decides those). ``noise`` [b, V]: each row's exponential
    draws, made by :func:`draw_noise` in the order fish-speech makes them.
    """
    logits = logits.float().clone()
    temperature, top_p, penalty = settings[:, 0:1], settings[:, 1:2], settings[:, 2:3]
    if window is not None:
        window = window.long()
        score = torch.gather(logits, -1, window)
        score = torch.where(score < 0, score * penalty, score / penalty)
        logits.scatter_(-1, window, score)
    scaled = logits / torch.clip(temperature, min=1e-5)
    ratio = F.softmax(scaled, dim=-1) / noise
    probs = F.softmax(logits, dim=-1)
    top_logit, top = logits.max(-1, keepdim=True)
    alone = probs.gather(-1, top) > top_p + _EDGE  # the top token alone holds more than top_p: the nucleus is it
    candidate = torch.where(alone, top, torch.argmax(ratio, dim=-1, keepdim=True))  # [b, 1]
    settled = alone
    for _ in range(_PASSES):
        own = torch.gather(logits, -1, candidate)
        mass = _mass_through(logits, probs, candidate, own)
        tied = _tied(logits, own)
        inside = (mass <= top_p - _EDGE) | (own >= top_logit)
        settled = settled | (inside & ~tied)
        outside = (mass > top_p + _EDGE) & ~tied & ~settled
        if not bool(outside.any()):
            break
        ratio.masked_fill_(outside & (logits <= own), -float("inf"))
        candidate = torch.where(outside, torch.argmax(ratio, dim=-1, keepdim=True), candidate)
    unsure = ~settled
    if bool(unsure.any()):
        rows = unsure.nonzero()[:, 0]
        candidate[rows] = _nucleus_sample(logits[rows], scaled[rows], top_p[rows], noise[rows])
    return candidate[:, 0].to(torch.int)


#: how close to the nucleus' edge (in probability mass) a candidate must be for the sort to decide
_EDGE = 1e-4
#: candidates tried before a row sorts (each pass draws from a smaller set that holds the nucleus)
_PASSES = 4


def _mass_through(logits: torch.Tensor, probs: torch.Tensor, candidate: torch.Tensor,
                  own: torch.Tensor) -> torch.Tensor:
    """The probability mass of the tokens ranked before each row's candidate, and its own: what
    fish-speech's cumulative sum reaches at the candidate, up to rounding."""
    return (probs * (logits > own)).sum(-1, keepdim=True) + torch.gather(probs, -1, candidate)


def _tied(logits: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Rows whose candidate shares its logit with another token: the sort's order decides those."""
    return (logits == own).sum(-1, keepdim=True) > 1


def _nucleus_sample(logits: torch.Tensor, scaled: torch.Tensor, top_p: torch.Tensor,
                    noise: torch.Tensor) -> torch.Tensor:
    """fish-speech's way, for the rows that need it: sort, cut the nucleus, sample with the same noise."""
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cum > top_p
    remove[:, 0] = False  # keep at least one option
    remove = remove.scatter(-1, sorted_indices, remove)
    probs = F.softmax(scaled.masked_fill(remove, -float("inf")), dim=-1)
    return torch.argmax(probs / noise, dim=-1, keepdim=True)


def encode_prompt(model: Any, text: str, prompt_text: Optional[str], prompt_tokens: Any) -> tuple[Any, Any, Any]:
    """fish-speech's ``generate_long`` prompt: the voice's transcript and codes (if any), then the text.
    Returns (tokens [K+1, T], audio_masks, audio_parts); ValueError "Prompt is too long" as fish-speech."""
    from fish_speech.content_sequence import ContentSequence, TextPart, VQPart

    sequence = ContentSequence(modality="interleave")
    if prompt_text is not None and prompt_tokens is not None:
        sequence.append([TextPart(text=prompt_text), VQPart(codes=prompt_tokens.cpu())], add_end=True, speaker=0)
    sequence.append([TextPart(text=text)], add_end=False, speaker=0)
    encoded, audio_masks, audio_parts = sequence.encode_for_inference(
        model.tokenizer, num_codebooks=model.config.num_codebooks)
    if encoded.size(1) > model.config.max_seq_len - 2048:
        raise ValueError(f"Prompt is too long: {encoded.size(1)} > {model.config.max_seq_len - 2048}")
    return encoded, audio_masks, audio_parts
