"""Settings.from_env: defaults, and every bad value is a ConfigError (exit 2) naming its variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelcache.errors import EXIT_CONFIG, ConfigError
from modelcache.settings import (
    DEFAULT_TEXT_EMBEDDING,
    DEFAULT_VISION,
    RepoRef,
    Settings,
    parse_repo,
)


def config_error(env: dict[str, str]) -> ConfigError:
    """The ConfigError that ``env`` raises; it must carry the configuration exit code."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.exit_code == EXIT_CONFIG == 2
    return info.value


# --- defaults ------------------------------------------------------------------------------


def test_defaults_from_empty_env() -> None:
    s = Settings.from_env({})
    assert s.models_dir == Path("/models")
    assert s.whisper == ("base",)
    assert s.asr_engine == "openai-whisper"
    assert s.whisper_url is None and s.whisper_sha256 is None
    assert s.text_embedding == (RepoRef("sentence-transformers/all-MiniLM-L6-v2", "main"),)
    assert s.vision == (RepoRef(DEFAULT_VISION, "main"),)
    assert DEFAULT_VISION == "google/siglip-base-patch16-224"
    assert s.face == "yunet"
    assert s.mlx == ()
    assert s.manifest is None
    assert s.verify == "fast"
    assert s.workers == 4 and isinstance(s.workers, int)
    assert s.retries == 5 and isinstance(s.retries, int)
    assert s.hf_endpoint == "https://huggingface.co"


def test_from_env_reads_only_the_given_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith(("MODELCACHE_", "HF_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MODELCACHE_WHISPER", "tiny")
    assert Settings.from_env({}).whisper == ("base",)
    assert Settings.from_env().whisper == ("tiny",)


def test_blank_values_fall_back_to_defaults() -> None:
    s = Settings.from_env(
        {"MODELCACHE_DIR": "  ", "MODELCACHE_WHISPER": "", "MODELCACHE_ASR_ENGINE": " ", "MODELCACHE_WORKERS": ""}
    )
    assert s == Settings.from_env({})


def test_values_are_stripped_and_applied() -> None:
    s = Settings.from_env(
        {
            "MODELCACHE_DIR": " /data/models ",
            "MODELCACHE_WHISPER": " small.en ",
            "MODELCACHE_ASR_ENGINE": "faster-whisper",
            "MODELCACHE_VERIFY": "deep",
            "MODELCACHE_WORKERS": "8",
            "MODELCACHE_STALL_TIMEOUT": "2.5",
            "HF_ENDPOINT": "http://127.0.0.1:8080/",
        }
    )
    assert s.models_dir == Path("/data/models")
    assert s.whisper == ("small.en",)
    assert s.asr_engine == "faster-whisper"
    assert s.verify == "deep"
    assert s.workers == 8
    assert s.stall_timeout == 2.5
    assert s.hf_endpoint == "http://127.0.0.1:8080"


# --- choices -------------------------------------------------------------------------------


def test_unknown_whisper_name() -> None:
    err = config_error({"MODELCACHE_WHISPER": "huge"})
    assert "MODELCACHE_WHISPER" in err.message
    assert "'huge'" in err.message
    assert "base" in err.message and "'none'" in err.message  # lists what is allowed


def test_bad_engine() -> None:
    err = config_error({"MODELCACHE_ASR_ENGINE": "whisper.cpp"})
    assert "MODELCACHE_ASR_ENGINE" in err.message
    assert "faster-whisper" in err.message
    assert "'none'" not in err.message  # the engine cannot be disabled


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MODELCACHE_FACE", "retinaface"),
        ("MODELCACHE_VERIFY", "paranoid"),
        ("MODELCACHE_TRANSFER", "rsync"),
        ("MODELCACHE_DEVICE", "tpu"),
    ],
)
def test_other_bad_choices_name_their_variable(name: str, value: str) -> None:
    err = config_error({name: value})
    assert name in err.message and repr(value) in err.message


@pytest.mark.parametrize("value", ["none", "None", "off", "false", "0", "disabled"])
def test_none_disables_whisper_vision_text_embedding_face(value: str) -> None:
    s = Settings.from_env(
        {
            "MODELCACHE_WHISPER": value,
            "MODELCACHE_VISION": value,
            "MODELCACHE_TEXT_EMBEDDING": value,
            "MODELCACHE_FACE": value,
            "MODELCACHE_MLX": value,
        }
    )
    assert s.whisper == ()
    assert s.vision == ()
    assert s.text_embedding == ()
    assert s.face is None
    assert s.mlx == ()


def test_blank_repo_variables_keep_the_default_models() -> None:
    s = Settings.from_env({"MODELCACHE_VISION": "", "MODELCACHE_TEXT_EMBEDDING": "  "})
    assert s.vision == (RepoRef(DEFAULT_VISION),)
    assert s.text_embedding == (RepoRef(DEFAULT_TEXT_EMBEDDING),)


# --- repo ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a/b/c",
        "no slash",
        "org/na me",
        "org--x/y",
        "org/x--y",
        "-org/x",
        "org/x-",
        ".org/x",
        "org/x..y",
        "org/",
        "/name",
        "org/" + "n" * 100,
        "o" * 50 + "/" + "n" * 46,  # 97 characters: one over the limit
    ],
)
def test_malformed_repo_ids_are_rejected(value: str) -> None:
    err = config_error({"MODELCACHE_VISION": value})
    assert "MODELCACHE_VISION" in err.message
    assert "not a Hugging Face repo id" in err.message
    assert err.remedy and "org/name" in err.remedy


def test_longest_valid_repo_id_is_accepted() -> None:
    value = "o" * 48 + "/" + "n" * 47  # 96 characters
    assert Settings.from_env({"MODELCACHE_VISION": value}).vision == (RepoRef(value),)


@pytest.mark.parametrize(
    "value", ["BAAI/bge-small-en-v1.5", "org_1/Name.v2", "a/b", "sentence-transformers/all-MiniLM-L6-v2"]
)
def test_valid_repo_ids(value: str) -> None:
    assert Settings.from_env({"MODELCACHE_TEXT_EMBEDDING": value}).text_embedding == (RepoRef(value, "main"),)


def test_repo_with_at_but_no_revision() -> None:
    err = config_error({"MODELCACHE_TEXT_EMBEDDING": "BAAI/bge-small-en-v1.5@"})
    assert "MODELCACHE_TEXT_EMBEDDING" in err.message
    assert "no revision" in err.message


@pytest.mark.parametrize("revision", ["bad rev", "-main", ".hidden", "v1;rm", "a" * 256, "~1", "v1:x"])
def test_bad_revision_characters(revision: str) -> None:
    err = config_error({"MODELCACHE_VISION": f"google/siglip-base-patch16-224@{revision}"})
    assert "MODELCACHE_VISION" in err.message
    assert "not a valid git revision" in err.message


def test_revision_with_dotdot_components_is_rejected() -> None:
    err = config_error({"MODELCACHE_VISION": "google/siglip-base-patch16-224@x/../../../../escape"})
    assert "MODELCACHE_VISION" in err.message


def test_parse_repo_keeps_the_revision() -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    assert parse_repo(f"org/name@{commit}", where="X") == RepoRef("org/name", commit)
    assert parse_repo("org/name@refs/pr/1", where="X") == RepoRef("org/name", "refs/pr/1")
    assert parse_repo(" org/name@v1.0 ", where="X") == RepoRef("org/name", "v1.0")
    assert parse_repo("org/name", where="X") == RepoRef("org/name", "main")
    assert str(parse_repo("org/name@dev", where="X")) == "org/name@dev"


def test_repo_env_keeps_the_revision() -> None:
    s = Settings.from_env({"MODELCACHE_VISION": "google/siglip-so400m-patch14-384@v2"})
    assert s.vision == (RepoRef("google/siglip-so400m-patch14-384", "v2"),)


@pytest.mark.parametrize("legacy", ["gpt2", "bert-base-uncased", "t5-small@main"])
def test_one_segment_repo_ids_are_accepted(legacy: str) -> None:
    """The Hub still resolves its legacy one-segment ids; the cache folder is models--gpt2."""
    ref = parse_repo(legacy, where="MODELCACHE_TEXT_EMBEDDING")
    assert ref.repo_id == legacy.split("@")[0] and ref.revision == "main"
    settings = Settings.from_env({"MODELCACHE_TEXT_EMBEDDING": legacy})
    assert settings.text_embedding == (ref,)


def test_parse_repo_error_uses_the_given_location() -> None:
    with pytest.raises(ConfigError) as info:
        parse_repo("no pe", where="manifest.toml:3")
    assert info.value.message.startswith("manifest.toml:3:")
    assert info.value.exit_code == 2


# --- MODELCACHE_MLX ------------------------------------------------------------------------


def test_mlx_list_comma_and_whitespace_separated() -> None:
    s = Settings.from_env(
        {"MODELCACHE_MLX": " mlx-community/a-4bit,mlx-community/b@v1\n mlx-community/c ,, \tmlx-community/d "}
    )
    assert s.mlx == (
        RepoRef("mlx-community/a-4bit"),
        RepoRef("mlx-community/b", "v1"),
        RepoRef("mlx-community/c"),
        RepoRef("mlx-community/d"),
    )


def test_mlx_empty_is_empty() -> None:
    assert Settings.from_env({"MODELCACHE_MLX": " , "}).mlx == ()


def test_mlx_duplicates_rejected() -> None:
    err = config_error({"MODELCACHE_MLX": "mlx-community/a mlx-community/b mlx-community/a@v2"})
    assert "MODELCACHE_MLX" in err.message
    assert "mlx-community/a" in err.message and "twice" in err.message


def test_mlx_bad_item_is_named_by_number() -> None:
    err = config_error({"MODELCACHE_MLX": "mlx-community/a, mlx-community/b, not/a/repo"})
    assert "MODELCACHE_MLX (item 3)" in err.message
    assert "not/a/repo" in err.message


def test_mlx_none_among_others_is_not_a_repo() -> None:
    err = config_error({"MODELCACHE_MLX": "mlx-community/a none"})
    assert "MODELCACHE_MLX (item 2)" in err.message


# --- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expect"),
    [
        ("MODELCACHE_WORKERS", "0", "between 1 and 64"),
        ("MODELCACHE_WORKERS", "65", "between 1 and 64"),
        ("MODELCACHE_WORKERS", "-3", "between 1 and 64"),
        ("MODELCACHE_WORKERS", "four", "not a number"),
        ("MODELCACHE_WORKERS", "inf", "not a finite number"),
        ("MODELCACHE_RETRIES", "101", "between 0 and 100"),
        ("MODELCACHE_STALL_TIMEOUT", "0", "at least 0.1"),
        ("MODELCACHE_STALL_TIMEOUT", "-1", "at least 0.1"),
        ("MODELCACHE_STALL_TIMEOUT", "60s", "not a number"),
        ("MODELCACHE_FETCH_TIMEOUT", "0.5", "at least 1"),
        ("MODELCACHE_LOCK_TIMEOUT", "-0.1", "at least 0"),
    ],
)
def test_bad_numbers(name: str, value: str, expect: str) -> None:
    err = config_error({name: value})
    assert f"{name}={value!r}" in err.message
    assert expect in err.message


def test_number_bounds_are_inclusive() -> None:
    s = Settings.from_env({"MODELCACHE_WORKERS": "64", "MODELCACHE_RETRIES": "0", "MODELCACHE_STALL_TIMEOUT": "0.1"})
    assert (s.workers, s.retries, s.stall_timeout) == (64, 0, 0.1)
    assert Settings.from_env({"MODELCACHE_WORKERS": "1"}).workers == 1


def test_workers_nan_is_a_config_error() -> None:
    err = config_error({"MODELCACHE_WORKERS": "nan"})
    assert "MODELCACHE_WORKERS" in err.message


def test_stall_timeout_nan_is_a_config_error() -> None:
    err = config_error({"MODELCACHE_STALL_TIMEOUT": "nan"})
    assert "MODELCACHE_STALL_TIMEOUT" in err.message


# --- whisper URL and sha256 ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["xyz", "ab" * 31, "ab" * 33, "g" * 64, "ab" * 31 + " z"])
def test_whisper_sha256_not_hex(value: str) -> None:
    err = config_error({"MODELCACHE_WHISPER_SHA256": value})
    assert "MODELCACHE_WHISPER_SHA256" in err.message
    assert "not a sha256" in err.message


def test_whisper_sha256_is_normalised_to_lowercase() -> None:
    s = Settings.from_env(
        {"MODELCACHE_WHISPER_SHA256": " " + "AB" * 32 + " ", "MODELCACHE_WHISPER_URL": "https://x.test/a.pt"}
    )
    assert s.whisper_sha256 == "ab" * 32
    assert s.whisper_url == "https://x.test/a.pt"


@pytest.mark.parametrize("value", ["ftp://example.com/base.pt", "file:///tmp/base.pt", "/tmp/base.pt", "example.com/x"])
def test_whisper_url_not_http(value: str) -> None:
    err = config_error({"MODELCACHE_WHISPER_URL": value})
    assert "MODELCACHE_WHISPER_URL" in err.message
    assert "http(s)" in err.message


# --- the HF token file ---------------------------------------------------------------------


def test_hf_token_read_and_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "hf_token"
    token_file.write_text("  hf_abc123\n\n", encoding="utf-8")
    s = Settings.from_env({"MODELCACHE_HF_TOKEN_FILE": str(token_file)})
    assert s.hf_token_file == token_file
    assert s.hf_token() == "hf_abc123"


def test_hf_token_absent_file_is_none(tmp_path: Path) -> None:
    s = Settings.from_env({"MODELCACHE_HF_TOKEN_FILE": str(tmp_path / "missing")})
    assert s.hf_token() is None


@pytest.mark.parametrize("content", ["", "   \n\t\n"])
def test_hf_token_empty_file_is_none(tmp_path: Path, content: str) -> None:
    token_file = tmp_path / "hf_token"
    token_file.write_text(content, encoding="utf-8")
    assert Settings.from_env({"MODELCACHE_HF_TOKEN_FILE": str(token_file)}).hf_token() is None


def test_hf_token_file_default_path() -> None:
    assert Settings.from_env({}).hf_token_file == Path("/run/secrets/hf_token")


# --- several models per task ----------------------------------------------------------------


def test_several_models_per_task_are_comma_separated() -> None:
    s = Settings.from_env(
        {
            "MODELCACHE_WHISPER": "tiny.en, base",
            "MODELCACHE_VISION": "none",
            "MODELCACHE_TEXT_EMBEDDING": "sentence-transformers/all-MiniLM-L6-v2, BAAI/bge-small-en-v1.5@v1",
        }
    )
    assert s.whisper == ("tiny.en", "base") and s.vision == ()
    assert s.text_embedding == (RepoRef(DEFAULT_TEXT_EMBEDDING), RepoRef("BAAI/bge-small-en-v1.5", "v1"))


@pytest.mark.parametrize(
    ("env", "expect"),
    [
        ({"MODELCACHE_WHISPER": "tiny, huge"}, "MODELCACHE_WHISPER (item 2)='huge'"),
        ({"MODELCACHE_WHISPER": "tiny, tiny"}, "listed twice"),
        ({"MODELCACHE_TEXT_EMBEDDING": "a/b, a/b"}, "listed twice"),
        ({"MODELCACHE_TEXT_EMBEDDING": "a/b, none"}, "cannot stand in a list"),
        ({"MODELCACHE_TEXT_EMBEDDING": "a/b c/d"}, "not a Hugging Face repo id"),  # commas separate, not spaces
    ],
)
def test_bad_lists_are_refused_naming_the_item(env: dict[str, str], expect: str) -> None:
    err = config_error(env)
    assert expect in err.message and err.remedy


def test_the_compute_type_is_a_faster_whisper_setting() -> None:
    assert (
        Settings.from_env(
            {"MODELCACHE_ASR_ENGINE": "faster-whisper", "MODELCACHE_ASR_COMPUTE_TYPE": "int8"}
        ).asr_compute_type
        == "int8"
    )
    err = config_error({"MODELCACHE_ASR_COMPUTE_TYPE": "int8"})
    assert "faster-whisper setting" in err.message and "MODELCACHE_ASR_ENGINE=faster-whisper" in err.remedy
