"""GPU sampling during synthesis, and placing the engine on the right CUDA ordinal."""

import sys
import threading
import types

import pytest
from fake_pynvml import MACHINES, NVML_ERROR_LIBRARY_NOT_FOUND, install
from voxfit.engine import AudioChunk, Engine, EngineInfo
from voxfit.errors import EngineLoadError
from voxfit.models import ModelSpec, Proposal
from voxfit.registry import Registry
from voxfit.settings import Settings
from voxfit_cuda import plugin
from voxfit_cuda.loader import torch_device
from voxfit_cuda.proposal_options import CudaOptions
from voxfit_cuda.sampler import GpuSampler, SampledEngine

UUID = "GPU-2a1b3c4d-1111-4000-8000-4090bbbb0001"


class BusyEngine:
    """Stands in for fish-torch: while it "generates", the (fake) GPU is 87% busy and holds 6 GiB more.

    It does not sleep for a fixed time: it keeps working until NVML has been
    asked for utilisation a few times while busy, so the test does not depend
    on timing, and puts the GPU back to idle before it returns.
    """

    backend = "fish-torch"
    sample_rate = 44100

    def __init__(self, fake, index=1):
        self.fake, self.gpu = fake, fake.gpus[index]
        self.closed = False

    def synthesize(self, text):
        idle_free = self.gpu["free"]
        before = self.fake.calls.get("nvmlDeviceGetUtilizationRates", 0)
        self.gpu["util"], self.gpu["free"] = 87.0, idle_free - 6 * 2**30
        pause = threading.Event()
        for _ in range(1000):  # at most ~10 s, so a sampler that never samples fails the test instead of hanging
            if self.fake.calls.get("nvmlDeviceGetUtilizationRates", 0) >= before + 3:
                break
            pause.wait(0.01)
        self.gpu["util"], self.gpu["free"] = 0.0, idle_free
        yield AudioChunk(pcm=b"\0\0" * 441, sample_rate=44100, text=text, tokens=2)

    def inference_modules(self):
        return []

    def close(self):
        self.closed = True


def test_utilisation_is_sampled_while_synthesizing_not_after(monkeypatch):
    fake = install(monkeypatch, "two-gpu-one-busy")
    engine = SampledEngine(BusyEngine(fake), GpuSampler(fake, uuid=UUID, interval=0.01))
    assert isinstance(engine, Engine)
    chunks = list(engine.synthesize("Hello there."))
    assert chunks[0].tokens == 2
    m = engine.metrics()
    assert m["gpu_samples"] >= 3
    assert m["gpu_util_max_percent"] == 87.0  # only visible during synthesis: the GPU is idle before and after
    assert 0 < m["gpu_util_mean_percent"] <= 87.0
    total = fake.gpus[1]["total"]
    assert m["gpu_mem_used_peak_bytes"] == total - (fake.gpus[1]["free"] - 6 * 2**30)
    # the sampler stopped with the synthesis and released NVML
    calls = fake.calls["nvmlDeviceGetUtilizationRates"]
    assert fake.init_count == 0
    assert engine.metrics()["gpu_samples"] == m["gpu_samples"] and fake.calls["nvmlDeviceGetUtilizationRates"] == calls


def test_the_sampler_watches_the_chosen_gpu_not_another(monkeypatch):
    fake = install(monkeypatch, "two-gpu-one-busy")  # GPU 0 is 92% busy with someone else's work
    engine = SampledEngine(BusyEngine(fake, index=1), GpuSampler(fake, uuid=UUID, interval=0.01))
    list(engine.synthesize("x"))
    assert engine.metrics()["gpu_util_max_percent"] == 87.0  # not 92: that is GPU 0


def test_sampling_without_nvml_reports_the_error_and_synthesis_still_runs(monkeypatch):
    broken = install(monkeypatch, dict(MACHINES["two-gpu-one-busy"], init_error=NVML_ERROR_LIBRARY_NOT_FOUND))

    class Quick(BusyEngine):
        def synthesize(self, text):
            yield AudioChunk(pcm=b"\0\0", sample_rate=44100)

    engine = SampledEngine(Quick(broken), GpuSampler(broken, uuid=UUID))
    assert len(list(engine.synthesize("x"))) == 1
    m = engine.metrics()
    assert m["gpu_samples"] == 0 and "NVML unavailable" in m["gpu_sampling_error"]


def test_abandoned_synthesis_stops_the_sampler(monkeypatch):
    fake = install(monkeypatch, "two-gpu-one-busy")

    class Endless(BusyEngine):
        def synthesize(self, text):
            while True:
                yield AudioChunk(pcm=b"\0\0", sample_rate=44100)

    engine = SampledEngine(Endless(fake), GpuSampler(fake, uuid=UUID, interval=0.01))
    stream = engine.synthesize("x")
    next(stream)
    stream.close()
    assert engine.sampler._thread is None and fake.init_count == 0
    engine.close()
    assert engine.inner.closed


# -- which CUDA ordinal torch gets ------------------------------------------------


def proposal(device="cuda:1", uuid=UUID, index=1):
    return Proposal(plugin="cuda", device=device, device_family="cuda", engine="fish-torch", precision="bf16",
                    quantization="int8-weight-only", compile=True, options=CudaOptions(uuid=uuid, nvml_index=index))


@pytest.mark.parametrize("environ, expected", [
    ({"CUDA_VISIBLE_DEVICES": UUID}, "cuda:0"),  # what prepare_env leaves: the chosen GPU alone
    ({"CUDA_VISIBLE_DEVICES": "1"}, "cuda:0"),
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, "cuda:1"),
    ({"CUDA_VISIBLE_DEVICES": "GPU-2a1b3c4d-1111,0"}, "cuda:0"),
    ({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, "cuda:1"),
])
def test_plan_device_maps_to_the_in_process_ordinal(environ, expected):
    assert torch_device(proposal(), environ) == expected


@pytest.mark.parametrize("environ, message", [
    ({}, "ordinal is unknown"),
    ({"CUDA_VISIBLE_DEVICES": ""}, "hides every GPU"),
    ({"CUDA_VISIBLE_DEVICES": "0"}, "not among the visible GPUs"),
])
def test_unmappable_device_is_a_load_error_not_a_wrong_gpu(environ, message):
    with pytest.raises(EngineLoadError, match=message):
        torch_device(proposal(), environ)


def test_load_engine_calls_the_fish_adapter_with_the_plans_settings_on_cuda_0(monkeypatch, tmp_path):
    fake = install(monkeypatch, "two-gpu-one-busy")
    received = {}

    def load_fish_engine(model, *, device, precision, quantization, compile, threads, cache_dir, batch_size,
                         planned_tokens_per_s):
        received.update(device=device, precision=precision, quantization=quantization, compile=compile,
                        threads=threads, model=model.name, cache_dir=cache_dir, batch_size=batch_size)
        return BusyEngine(fake)

    adapter = types.ModuleType("fake_fish_adapter")
    adapter.load_fish_engine = load_fish_engine
    monkeypatch.setitem(sys.modules, "fake_fish_adapter", adapter)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", UUID)
    model = ModelSpec(family="fish", name="s1")
    settings = Settings(cache_dir=tmp_path)
    engines = Registry()  # the engine comes from the registry, whoever registered it
    engines.add_engine(EngineInfo(backend="fish-torch", families=frozenset({"fish"}),
                                  loader="fake_fish_adapter:load_fish_engine"), plugin="fish")
    engine = plugin.load_engine(proposal(), model, settings, engines)
    assert received == {"device": "cuda:0", "precision": "bf16", "quantization": "int8-weight-only",
                        "compile": True, "threads": None, "model": "s1", "cache_dir": tmp_path,
                        "batch_size": proposal().batch_size}
    list(engine.synthesize("x"))
    assert engine.metrics()["gpu_util_max_percent"] == 87.0


def test_load_engine_refuses_other_model_families(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", UUID)
    with pytest.raises(EngineLoadError, match="only Fish Speech"):
        plugin.load_engine(proposal(), ModelSpec(family="piper", name="v"), Settings(), Registry())


def test_the_runs_metrics_carry_what_the_gpu_did_during_synthesis(monkeypatch):
    from voxfit.speaking.synthesis import synthesize

    fake = install(monkeypatch, "two-gpu-one-busy")
    engine = SampledEngine(BusyEngine(fake), GpuSampler(fake, uuid=UUID, interval=0.01))
    written = []
    metrics = synthesize(engine, ["Hello there.", "Again."], type("Sink", (), {"write": lambda s, b: written.append(b)})())
    assert len(written) == 2 and metrics.tokens == 4
    assert metrics.engine["gpu_util_max_percent"] == 87.0
    assert metrics.engine["gpu_mem_used_peak_bytes"] > 0
    assert metrics.as_dict()["engine"]["gpu_util_max_percent"] == 87.0  # what `voxfit run --json` prints
