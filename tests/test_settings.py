"""Settings: VOXFIT_ variables, .env, flags on top, and one-line errors for bad values."""


import pytest
from helpers import cpu_profile
from voxfit.errors import UsageError
from voxfit.planning.planner import make_plan
from voxfit.plugins import PluginHost
from voxfit.settings import load_settings


def test_environment_and_dotenv(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("VOXFIT_DEVICE=cpu\nVOXFIT_BLOCK_PLUGINS=cuda, mps\nVOXFIT_STRICT=1\n")
    s = load_settings()
    assert (s.device, s.block_plugins, s.strict) == ("cpu", ["cuda", "mps"], True)
    monkeypatch.setenv("VOXFIT_DEVICE", "mps")  # the environment beats .env
    assert load_settings().device == "mps"
    assert load_settings(device="cuda").device == "cuda"  # a flag beats both


def test_allow_list_and_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VOXFIT_ALLOW_PLUGINS", "cpu_onnx")
    monkeypatch.setenv("VOXFIT_CACHE_DIR", str(tmp_path / "c"))
    s = load_settings(model="voice.onnx")
    assert s.allow_plugins == ["cpu_onnx"] and s.cache_dir == tmp_path / "c" and s.model == "voice.onnx"


@pytest.mark.parametrize("source", ["flag", "env"])
def test_unknown_device_family_is_a_one_line_error_naming_its_source_and_the_families(monkeypatch, source):
    # Device families are what the installed plugins register: checked when the plan is made.
    if source == "env":
        monkeypatch.setenv("VOXFIT_DEVICE", "gpu")
        call = {}
    else:
        call = {"device": "gpu"}
    host = PluginHost.from_entry_points(load_settings(**call))
    with pytest.raises(UsageError) as info:
        make_plan(host, hardware=cpu_profile())
    expected_source = "VOXFIT_DEVICE" if source == "env" else "--device"
    assert str(info.value) == (
        f"unknown device 'gpu' from {expected_source}: choose auto or a device family the plugins know: cpu, cuda,"
        " mps (present on this machine: cpu)"
    )


@pytest.mark.parametrize("value", ["GPU!", "../cpu", "a" * 70])
def test_a_device_that_is_not_a_family_name_is_refused_at_once(value):
    with pytest.raises(UsageError, match="from --device: name a device family"):
        load_settings(device=value)


def test_other_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("VOXFIT_MEMORY_HEADROOM", "2")
    with pytest.raises(UsageError, match="VOXFIT_MEMORY_HEADROOM"):
        load_settings()


# -- .env read safely: bounded, UTF-8, only a regular file --------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"VOXFIT_DEVICE=\xff\xfe", r"\.env in .* is not valid UTF-8 \(byte 0xff at offset 14\)"),
        (b"#" * (9 * 2**20), r"\.env in .* is larger than 8 MiB"),
        (b'VOXFIT_DEVICE="cpu\n', r"\.env in .*, line 1, cannot be parsed: 'VOXFIT_DEVICE=\"cpu'"),
    ],
)
def test_a_bad_dotenv_is_a_one_line_error_naming_it(tmp_path, content, message):
    (tmp_path / ".env").write_bytes(content)
    with pytest.raises(UsageError, match=message) as info:
        load_settings()
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_dotenv_lines_of_other_tools_are_skipped_quietly(tmp_path, capfd):
    (tmp_path / ".env").write_text('COMPOSE weird "syntax\nVOXFIT_DEVICE=cpu\n')
    assert load_settings().device == "cpu"
    assert capfd.readouterr().err == ""  # python-dotenv's "could not parse" warning stays out of the CLI's stderr


@pytest.mark.parametrize("kind", ["directory", "dev-zero", "dev-null"])
def test_a_dotenv_that_is_not_a_regular_file_is_not_a_settings_file(tmp_path, kind):
    # `python -m venv .env` makes a directory; a link to /dev/null says "no .env".
    dotenv = tmp_path / ".env"
    if kind == "directory":
        dotenv.mkdir()
    else:
        dotenv.symlink_to("/dev/zero" if kind == "dev-zero" else "/dev/null")
    assert load_settings().device == "auto"


def test_an_invalid_value_from_dotenv_says_so(tmp_path):
    (tmp_path / ".env").write_text("VOXFIT_MEMORY_HEADROOM=7\n")
    with pytest.raises(UsageError, match=r"invalid value '7' from VOXFIT_MEMORY_HEADROOM in .*\.env"):
        load_settings()


# -- the cache directory: empty means unset, as in the XDG spec -----------------------------


def test_empty_cache_dir_means_the_default_not_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("VOXFIT_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_settings().cache_dir == tmp_path / "xdg" / "voxfit"
    monkeypatch.setenv("VOXFIT_CACHE_DIR", "   ")
    assert load_settings().cache_dir == tmp_path / "xdg" / "voxfit"


@pytest.mark.parametrize("xdg", ["", "relative/cache"])
def test_empty_or_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path, xdg):
    monkeypatch.delenv("VOXFIT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    assert load_settings().cache_dir == tmp_path / "home" / ".cache" / "voxfit"


def test_cache_dir_from_dotenv_expands_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("VOXFIT_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / ".env").write_text("VOXFIT_CACHE_DIR=~/tts-cache\nVOXFIT_STRICT=1\n")
    s = load_settings()
    assert s.cache_dir == tmp_path / "home" / "tts-cache" and s.strict is True


@pytest.mark.parametrize("value", ["", " , "])
def test_empty_allow_list_variable_is_unset_not_allow_nothing(monkeypatch, value):
    monkeypatch.setenv("VOXFIT_ALLOW_PLUGINS", value)
    assert load_settings().allow_plugins is None
    monkeypatch.setenv("VOXFIT_ALLOW_PLUGINS", "cpu_onnx, ")
    assert load_settings().allow_plugins == ["cpu_onnx"]


@pytest.mark.parametrize("variable", ["VOXFIT_CACHE_DIR", "VOXFIT_MODEL"])
def test_a_path_with_a_nul_from_dotenv_is_refused(monkeypatch, tmp_path, variable):
    # Only .env can carry a NUL (argv and the environment cannot); file calls would raise on it deep inside.
    monkeypatch.delenv("VOXFIT_CACHE_DIR")
    (tmp_path / ".env").write_bytes(f"{variable}=/tmp/a\x00b\n".encode())
    with pytest.raises(UsageError) as info:
        load_settings()
    assert str(info.value) == (
        f"invalid value '/tmp/a\\x00b' from {variable} in {tmp_path / '.env'}: a path cannot contain a NUL character"
    )
