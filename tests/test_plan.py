"""build_plan: the environment (and the optional TOML manifest) as one list of artifacts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from modelcache.errors import EXIT_CONFIG, ConfigError
from modelcache.fetch.hub import RemoteFile, select_files
from modelcache.plan import (
    FASTER_WHISPER_FILES,
    MANIFEST_EXAMPLE,
    WHISPER_BASE_URL,
    WHISPER_CHECKPOINTS,
    Artifact,
    build_plan,
    graph_file,
)
from modelcache.settings import Settings

BASE_SHA = "ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e"
SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4


def plan_for(env: dict[str, str]):
    return build_plan(Settings.from_env(env))


def plan_error(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        plan_for(env)
    assert info.value.exit_code == EXIT_CONFIG
    return info.value


def write_manifest(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(text, encoding="utf-8")
    return path


def manifest_plan(tmp_path: Path, text: str, **env: str):
    path = write_manifest(tmp_path, text)
    return plan_for({"MODELCACHE_MANIFEST": str(path), **env})


def manifest_error(tmp_path: Path, text: str, **env: str) -> ConfigError:
    path = write_manifest(tmp_path, text)
    err = plan_error({"MODELCACHE_MANIFEST": str(path), **env})
    assert str(path) in err.message  # the file is always named
    return err


# --- the default plan ----------------------------------------------------------------------


def test_default_plan_artifacts_in_order() -> None:
    plan = plan_for({})
    assert [a.name for a in plan.artifacts] == [
        "whisper/base",
        "sentence-transformers/all-MiniLM-L6-v2",
        "google/siglip-base-patch16-224",
        "opencv/face_detection_yunet",
    ]
    assert [a.role for a in plan.artifacts] == ["asr", "text-embedding", "vision", "face"]


def test_default_whisper_artifact() -> None:
    whisper = plan_for({}).get("whisper/base")
    assert whisper is not None
    assert whisper.kind == "whisper"
    assert whisper.role == "asr"
    assert whisper.engine == "openai-whisper"
    assert whisper.sha256 == BASE_SHA == WHISPER_CHECKPOINTS["base"][0]
    assert whisper.source == f"{WHISPER_BASE_URL}/{BASE_SHA}/base.pt"
    assert whisper.source.startswith("https://openaipublic.azureedge.net/")
    assert f"/{whisper.sha256}/" in whisper.source
    assert whisper.dest == "whisper/base.pt"
    assert whisper.revision is None and whisper.include is None
    assert not whisper.is_repo


@pytest.mark.parametrize("name", ["sentence-transformers/all-MiniLM-L6-v2", "google/siglip-base-patch16-224"])
def test_default_model_repos(name: str) -> None:
    artifact = plan_for({}).get(name)
    assert artifact is not None
    assert artifact.kind == "hf" and artifact.is_repo
    assert artifact.source == name
    assert artifact.revision == "main"
    assert artifact.dest == "huggingface/hub/models--" + name.replace("/", "--")
    assert artifact.include is None
    for foreign in ("onnx/*", "openvino/*", "*.h5", "flax_model*", "tf_model*"):
        assert foreign in artifact.exclude
    assert "*.safetensors" not in artifact.exclude
    assert artifact.prefer_safetensors is True
    assert artifact.describe() == f"{name}@main"


def test_default_yunet() -> None:
    yunet = plan_for({}).get("opencv/face_detection_yunet")
    assert yunet is not None
    assert yunet.kind == "hf" and yunet.role == "face"
    assert yunet.include == ("face_detection_yunet_2023mar.onnx",)
    assert yunet.exclude == ()
    assert yunet.dest == "huggingface/hub/models--opencv--face_detection_yunet"


def test_everything_disabled_is_an_empty_plan() -> None:
    plan = plan_for(
        {
            "MODELCACHE_WHISPER": "none",
            "MODELCACHE_TEXT_EMBEDDING": "none",
            "MODELCACHE_VISION": "none",
            "MODELCACHE_FACE": "none",
        }
    )
    assert plan.artifacts == ()


def test_plan_lookup_helpers() -> None:
    plan = plan_for({})
    assert plan.get("nope") is None
    assert plan.get(f"{WHISPER_BASE_URL}/{BASE_SHA}/base.pt").name == "whisper/base"  # by source too
    assert [a.name for a in plan.by_role("vision")] == ["google/siglip-base-patch16-224"]


def test_mlx_repos_follow_the_defaults() -> None:
    plan = plan_for({"MODELCACHE_MLX": "mlx-community/a-4bit@v1 mlx-community/b"})
    mlx = plan.by_role("mlx")
    assert [(a.source, a.revision, a.kind) for a in mlx] == [
        ("mlx-community/a-4bit", "v1", "mlx"),
        ("mlx-community/b", "main", "mlx"),
    ]
    assert plan.artifacts[-2:] == tuple(mlx)
    assert all(a.include is None and a.exclude == () for a in mlx)


# --- whisper engines -----------------------------------------------------------------------


def test_faster_whisper_tiny_en() -> None:
    plan = plan_for({"MODELCACHE_ASR_ENGINE": "faster-whisper", "MODELCACHE_WHISPER": "tiny.en"})
    asr = plan.by_role("asr")
    assert len(asr) == 1
    a = asr[0]
    assert a.kind == "hf" and a.engine == "faster-whisper"
    assert a.source == a.name == "Systran/faster-whisper-tiny.en"
    assert a.revision == "main"
    assert a.include == FASTER_WHISPER_FILES
    assert {"config.json", "model.bin", "tokenizer.json", "vocabulary.*"} <= set(a.include)
    assert a.dest == "huggingface/hub/models--Systran--faster-whisper-tiny.en"
    assert a.sha256 is None


@pytest.mark.parametrize("name", ["turbo", "large-v3-turbo"])
def test_faster_whisper_turbo(name: str) -> None:
    plan = plan_for({"MODELCACHE_ASR_ENGINE": "faster-whisper", "MODELCACHE_WHISPER": name})
    assert plan.by_role("asr")[0].source == "mobiuslabsgmbh/faster-whisper-large-v3-turbo"


def test_openai_whisper_turbo_uses_the_turbo_checkpoint() -> None:
    a = plan_for({"MODELCACHE_WHISPER": "turbo"}).by_role("asr")[0]
    assert a.name == "whisper/turbo"
    assert a.dest == "whisper/large-v3-turbo.pt"
    assert a.sha256 in a.source


def test_whisper_url_with_sha_in_path() -> None:
    url = f"https://mirror.example/whisper/{SHA_B}/base.pt"
    a = plan_for({"MODELCACHE_WHISPER_URL": url}).by_role("asr")[0]
    assert a.source == url
    assert a.sha256 == SHA_B
    assert a.dest == "whisper/base.pt"


def test_whisper_url_with_explicit_sha_wins_over_path() -> None:
    url = f"https://mirror.example/whisper/{SHA_B}/base.pt"
    a = plan_for({"MODELCACHE_WHISPER_URL": url, "MODELCACHE_WHISPER_SHA256": SHA_A}).by_role("asr")[0]
    assert a.sha256 == SHA_A


def test_whisper_url_without_sha_needs_the_variable() -> None:
    url = "https://mirror.example/whisper/base.pt"
    err = plan_error({"MODELCACHE_WHISPER_URL": url})
    assert "MODELCACHE_WHISPER_URL" in err.message
    assert err.remedy and "MODELCACHE_WHISPER_SHA256" in err.remedy
    a = plan_for({"MODELCACHE_WHISPER_URL": url, "MODELCACHE_WHISPER_SHA256": SHA_A}).by_role("asr")[0]
    assert (a.source, a.sha256) == (url, SHA_A)


def test_whisper_sha_without_url_is_rejected() -> None:
    err = plan_error({"MODELCACHE_WHISPER_SHA256": SHA_A})
    assert "MODELCACHE_WHISPER_SHA256" in err.message and "MODELCACHE_WHISPER_URL" in err.message


def test_whisper_url_rejected_with_faster_whisper() -> None:
    err = plan_error(
        {
            "MODELCACHE_ASR_ENGINE": "faster-whisper",
            "MODELCACHE_WHISPER_URL": f"https://mirror.example/{SHA_A}/base.pt",
        }
    )
    assert "MODELCACHE_WHISPER_URL" in err.message and "openai-whisper" in err.message


# --- digests -------------------------------------------------------------------------------


def test_digest_is_stable_for_the_same_env() -> None:
    env = {"MODELCACHE_MLX": "mlx-community/a", "MODELCACHE_WHISPER": "small"}
    first = plan_for(env).digest
    assert first == plan_for(dict(env)).digest
    assert len(first) == 64 and int(first, 16) >= 0


def test_digest_independent_of_dir_and_transfer_knobs() -> None:
    base = plan_for({}).digest
    assert plan_for({"MODELCACHE_DIR": "/somewhere/else"}).digest == base
    assert plan_for({"MODELCACHE_WORKERS": "17", "MODELCACHE_RETRIES": "0"}).digest == base
    assert (
        plan_for(
            {
                "MODELCACHE_STALL_TIMEOUT": "5",
                "MODELCACHE_TRANSFER": "xet",
                "MODELCACHE_VERIFY": "deep",
                "HF_ENDPOINT": "http://127.0.0.1:1",
            }
        ).digest
        == base
    )


@pytest.mark.parametrize(
    "env",
    [
        {"MODELCACHE_WHISPER": "tiny"},
        {"MODELCACHE_WHISPER": "none"},
        {"MODELCACHE_ASR_ENGINE": "faster-whisper"},
        {"MODELCACHE_WHISPER_URL": f"https://mirror.example/{SHA_A}/base.pt"},
        {"MODELCACHE_TEXT_EMBEDDING": "BAAI/bge-small-en-v1.5"},
        {"MODELCACHE_TEXT_EMBEDDING": "sentence-transformers/all-MiniLM-L6-v2@v1"},
        {"MODELCACHE_VISION": "google/siglip-base-patch16-224@refs/pr/1"},
        {"MODELCACHE_VISION": "none"},
        {"MODELCACHE_FACE": "none"},
        {"MODELCACHE_MLX": "mlx-community/a"},
    ],
)
def test_digest_changes_with_any_model_or_revision(env: dict[str, str]) -> None:
    assert plan_for(env).digest != plan_for({}).digest


def test_digest_changes_with_patterns_and_revisions(tmp_path: Path) -> None:
    def digest(entry: str) -> str:
        return manifest_plan(tmp_path, f'[[model]]\nrepo = "BAAI/bge-small-en-v1.5"\n{entry}').digest

    digests = [
        digest(""),
        digest('include = ["*.json"]'),
        digest('include = ["*.json", "*.txt"]'),
        digest('exclude = ["*.json"]'),
        digest("mlx = true"),
    ]
    assert len(set(digests)) == len(digests)
    revs = {manifest_plan(tmp_path, f'[[model]]\nrepo = "BAAI/bge-small-en-v1.5@{r}"\n').digest for r in ("main", "v2")}
    assert len(revs) == 2 and digests[0] in revs  # no '@' means '@main'


def test_digest_changes_when_an_artifact_field_changes() -> None:
    plan = plan_for({})
    first = plan.artifacts[0]
    changed = type(plan)((replace(first, sha256="0" * 64), *plan.artifacts[1:]))
    reordered = type(plan)(tuple(reversed(plan.artifacts)))
    assert changed.digest != plan.digest
    assert reordered.digest != plan.digest


def test_artifact_spec_differs_per_artifact() -> None:
    plan = plan_for({"MODELCACHE_MLX": "mlx-community/a mlx-community/b"})
    specs = [a.spec for a in plan.artifacts]
    assert len(set(specs)) == len(specs) == 6
    assert all(len(s) == 64 for s in specs)


def test_artifact_spec_is_stable_and_tracks_content() -> None:
    a = plan_for({}).artifacts[1]
    b = plan_for({"MODELCACHE_DIR": "/elsewhere"}).artifacts[1]
    assert a.spec == b.spec
    assert replace(a, revision="v2").spec != a.spec
    assert replace(a, exclude=a.exclude[1:]).spec != a.spec
    assert replace(a, prefer_safetensors=False).spec != a.spec


# --- the TOML manifest ---------------------------------------------------------------------


def test_manifest_models_and_files(tmp_path: Path) -> None:
    plan = manifest_plan(
        tmp_path,
        f"""\
[[model]]
repo = "BAAI/bge-small-en-v1.5@v1.5"
include = ["*.json", "*.txt", "model.safetensors"]
exclude = "onnx/*"

[[model]]
repo = "mlx-community/whisper-tiny"
mlx = true

[[file]]
url = "https://example.com/models/detector.onnx"
sha256 = "{SHA_A.upper()}"
path = "detectors/detector.onnx"

[[file]]
url = "https://example.com/models/other.bin?download=1"
sha256 = "{SHA_B}"
""",
    )
    extra = plan.artifacts[4:]
    assert [a.name for a in extra] == [
        "BAAI/bge-small-en-v1.5",
        "mlx-community/whisper-tiny",
        "files/detectors/detector.onnx",
        "files/other.bin",
    ]
    bge, mlx, det, other = extra
    assert (bge.kind, bge.role, bge.revision) == ("hf", "extra", "v1.5")
    assert bge.include == ("*.json", "*.txt", "model.safetensors")
    assert bge.exclude == ("onnx/*",)
    assert bge.prefer_safetensors is False
    assert (mlx.kind, mlx.role, mlx.revision, mlx.include) == ("mlx", "mlx", "main", None)
    assert mlx.dest == "huggingface/hub/models--mlx-community--whisper-tiny"
    assert (det.kind, det.role, det.source) == ("url", "extra", "https://example.com/models/detector.onnx")
    assert det.sha256 == SHA_A  # normalised to lowercase
    assert det.dest == "files/detectors/detector.onnx"
    assert other.dest == "files/other.bin"  # derived from the URL's path, query dropped
    assert other.sha256 == SHA_B


def test_manifest_example_parses(tmp_path: Path) -> None:
    text = MANIFEST_EXAMPLE.replace("<64 hex characters>", SHA_A)
    plan = manifest_plan(tmp_path, text)
    assert [a.name for a in plan.artifacts[-2:]] == ["BAAI/bge-small-en-v1.5", "files/detectors/detector.onnx"]


def test_empty_manifest_adds_nothing(tmp_path: Path) -> None:
    assert manifest_plan(tmp_path, "# nothing yet\n").artifacts == plan_for({}).artifacts


def test_missing_manifest_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    err = plan_error({"MODELCACHE_MANIFEST": str(missing)})
    assert "MODELCACHE_MANIFEST" in err.message
    assert str(missing) in err.message
    assert "not found" in err.message


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, '[[model]]\nrepo = "a/b"\ninclude = [\n  "x",\n  oops\n]\n')
    assert "not valid TOML" in err.message
    assert "line 5" in err.message


def test_unknown_section(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, '[[model]]\nrepo = "a/b"\n\n[[dataset]]\nrepo = "c/d"\n')
    assert "dataset" in err.message and "unknown section" in err.message


def test_unknown_section_names_the_line(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, '[[model]]\nrepo = "a/b"\n\n[[dataset]]\nrepo = "c/d"\n')
    assert "manifest.toml:4" in err.message


# The offending entry is always the second of its kind, on line 7 (a [[file]] and a [[model]]
# come first, so the line must be found per section, not by counting every header).
_PREFIX = f"""\
[[file]]
url = "https://example.com/ok.bin"
sha256 = "{SHA_A}"

[[model]]
repo = "org/ok"
"""


@pytest.mark.parametrize(
    ("entry", "expect"),
    [
        ('[[model]]\nrepo = "org/x"\nrevision = "v1"\n', "unknown key"),
        ('[[model]]\ninclude = ["*.json"]\n', "'repo' is required"),
        ("[[model]]\nrepo = 7\n", "'repo' is required"),
        ('[[model]]\nrepo = "no slash"\n', "not a Hugging Face repo id"),
        ('[[model]]\nrepo = "org/x@"\n', "no revision"),
        ('[[model]]\nrepo = "org/x"\ninclude = [1, 2]\n', "list of glob patterns"),
        ('[[model]]\nrepo = "org/x"\nexclude = [""]\n', "list of glob patterns"),
    ],
)
def test_bad_model_entry_names_file_and_header_line(tmp_path: Path, entry: str, expect: str) -> None:
    err = manifest_error(tmp_path, _PREFIX + entry)
    assert "manifest.toml:7" in err.message
    assert "[[model]] #2" in err.message
    assert expect in err.message


@pytest.mark.parametrize(
    ("entry", "expect"),
    [
        (f'[[file]]\nurl = "https://e.test/a"\nsha256 = "{SHA_B}"\nname = "x"\n', "unknown key"),
        ('[[file]]\nurl = "https://e.test/a.bin"\n', "'sha256' is required"),
        ('[[file]]\nurl = "https://e.test/a.bin"\nsha256 = "1234"\n', "not a sha256"),
        (f'[[file]]\nurl = "ftp://e.test/a.bin"\nsha256 = "{SHA_B}"\n', "http(s) URL"),
        (f'[[file]]\nsha256 = "{SHA_B}"\n', "http(s) URL"),
        (f'[[file]]\nurl = "https://e.test/a.bin"\nsha256 = "{SHA_B}"\npath = "../escape.bin"\n', "relative path"),
        (f'[[file]]\nurl = "https://e.test/a.bin"\nsha256 = "{SHA_B}"\npath = "a/../../x"\n', "relative path"),
        (f'[[file]]\nurl = "https://e.test/a.bin"\nsha256 = "{SHA_B}"\npath = "/etc/passwd"\n', "relative path"),
        (f'[[file]]\nurl = "https://e.test/"\nsha256 = "{SHA_B}"\n', "derive a file name"),
    ],
)
def test_bad_file_entry_names_file_and_header_line(tmp_path: Path, entry: str, expect: str) -> None:
    # Put the bad [[file]] second among files and on line 7: swap the prefix order.
    prefix = '[[model]]\nrepo = "org/ok"\n\n[[file]]\nurl = "https://example.com/ok.bin"\nsha256 = "' + SHA_A + '"\n'
    err = manifest_error(tmp_path, prefix + entry)
    assert "manifest.toml:7" in err.message
    assert "[[file]] #2" in err.message
    assert expect in err.message


def test_header_line_with_spaces_inside_brackets(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, '\n\n[[ model ]]\nrepo = "no slash"\n')
    assert "manifest.toml:3" in err.message


def test_model_written_as_plain_table_is_rejected(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, '[model]\nrepo = "org/x"\n')
    assert "[[model]]" in err.message


# --- duplicates ----------------------------------------------------------------------------


def test_same_repo_in_mlx_and_manifest_is_rejected(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[model]]\nrepo = "mlx-community/a@v2"\nmlx = true\n')
    err = plan_error({"MODELCACHE_MANIFEST": str(path), "MODELCACHE_MLX": "mlx-community/a"})
    assert "mlx-community/a" in err.message and "both land in" in err.message


def test_same_repo_twice_in_manifest_is_rejected(tmp_path: Path) -> None:
    text = '[[model]]\nrepo = "org/x"\n\n[[model]]\nrepo = "org/x@v1"\ninclude = ["*.json"]\n'
    path = write_manifest(tmp_path, text)
    err = plan_error({"MODELCACHE_MANIFEST": str(path)})
    assert "org/x@v1" in err.message and "org/x@main" in err.message
    assert err.remedy and "once" in err.remedy


def test_manifest_repeating_a_default_model_is_rejected(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, '[[model]]\nrepo = "google/siglip-base-patch16-224"\n')
    err = plan_error({"MODELCACHE_MANIFEST": str(path)})
    assert "google/siglip-base-patch16-224" in err.message and "vision" in err.message


def test_same_file_path_twice_is_rejected(tmp_path: Path) -> None:
    text = (
        f'[[file]]\nurl = "https://a.test/x/model.onnx"\nsha256 = "{SHA_A}"\n\n'
        f'[[file]]\nurl = "https://b.test/model.onnx"\nsha256 = "{SHA_B}"\n'
    )
    path = write_manifest(tmp_path, text)
    err = plan_error({"MODELCACHE_MANIFEST": str(path)})
    assert "both land in" in err.message


def test_artifact_describe() -> None:
    a = Artifact(name="x", role="extra", kind="url", source="https://e.test/x", dest="files/x", sha256=SHA_A)
    assert a.describe() == "https://e.test/x"
    assert not a.is_repo


def test_several_models_per_task_each_get_an_artifact() -> None:
    plan = plan_for(
        {
            "MODELCACHE_WHISPER": "tiny.en,base",
            "MODELCACHE_ASR_ENGINE": "faster-whisper",
            "MODELCACHE_TEXT_EMBEDDING": "sentence-transformers/all-MiniLM-L6-v2,BAAI/bge-small-en-v1.5",
            "MODELCACHE_VISION": "none",
            "MODELCACHE_FACE": "none",
        }
    )
    assert [(a.role, a.source) for a in plan.artifacts] == [
        ("asr", "Systran/faster-whisper-tiny.en"),
        ("asr", "Systran/faster-whisper-base"),
        ("text-embedding", "sentence-transformers/all-MiniLM-L6-v2"),
        ("text-embedding", "BAAI/bge-small-en-v1.5"),
    ]
    # one model per task plans exactly as before: existing locks stay valid
    single = plan_for({"MODELCACHE_WHISPER": "tiny.en", "MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none"})
    assert (
        single.digest
        == plan_for({"MODELCACHE_WHISPER": " tiny.en ", "MODELCACHE_VISION": "none", "MODELCACHE_FACE": "none"}).digest
    )


def test_a_whisper_url_names_one_checkpoint_only() -> None:
    err = plan_error(
        {
            "MODELCACHE_WHISPER": "tiny,base",
            "MODELCACHE_WHISPER_URL": "https://x.test/tiny.pt",
            "MODELCACHE_WHISPER_SHA256": "ab" * 32,
        }
    )
    assert "lists 2 sizes" in err.message and "MODELCACHE_WHISPER_URL" in err.remedy


# --- the text engine (MODELCACHE_TEXT_ENGINE) ---------------------------------------------


def test_the_text_engine_is_part_of_the_text_models_spec_only() -> None:
    torch_plan = build_plan(Settings.from_env({}))
    onnx_plan = build_plan(Settings.from_env({"MODELCACHE_TEXT_ENGINE": "onnx"}))
    assert torch_plan.by_role("text-embedding")[0].engine is None  # locks of the torch engine stay valid
    assert onnx_plan.by_role("text-embedding")[0].engine == "onnx"
    assert torch_plan.digest != onnx_plan.digest
    for role in ("asr", "vision", "face"):
        assert [a.spec for a in torch_plan.by_role(role)] == [a.spec for a in onnx_plan.by_role(role)]


def test_text_engine_values_and_the_gpu() -> None:
    with pytest.raises(
        ConfigError, match="MODELCACHE_TEXT_ENGINE='tensorrt' is not one of: torch, onnx, onnx-int8, openvino"
    ):
        Settings.from_env({"MODELCACHE_TEXT_ENGINE": "tensorrt"})
    with pytest.raises(ConfigError, match="runs on the CPU, and MODELCACHE_DEVICE=cuda") as caught:
        Settings.from_env({"MODELCACHE_TEXT_ENGINE": "onnx-int8", "MODELCACHE_DEVICE": "cuda"})
    assert caught.value.exit_code == EXIT_CONFIG
    assert Settings.from_env({"MODELCACHE_TEXT_ENGINE": "onnx", "MODELCACHE_DEVICE": "auto"}).text_engine == "onnx"


def _remote(path: str) -> RemoteFile:
    return RemoteFile(path, 10, "oid-" + path, None, "oid-" + path, False)


ST_REPO = [
    "config.json",
    "tokenizer.json",
    "modules.json",
    "1_Pooling/config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "onnx/model.onnx",
    "onnx/model_quint8_avx2.onnx",
    "onnx/model_O4.onnx",
    "openvino/openvino_model.xml",
]


@pytest.mark.parametrize(
    ("engine", "repo", "graphs"),
    [
        (None, ST_REPO, ["model.safetensors"]),
        ("onnx", ST_REPO, ["onnx/model.onnx"]),
        ("onnx-int8", ST_REPO, ["onnx/model_quint8_avx2.onnx"]),
        ("onnx-int8", [p for p in ST_REPO if "quint8" not in p], ["onnx/model.onnx"]),  # quantized at fetch
        ("onnx", [p for p in ST_REPO if not p.startswith("onnx/")], ["model.safetensors"]),  # exported at fetch
        ("openvino", ST_REPO, ["onnx/model.onnx"]),  # OpenVINO reads the fp32 ONNX graph
    ],
)
def test_each_text_engine_selects_the_weights_it_runs(engine: str | None, repo: list[str], graphs: list[str]) -> None:
    settings = Settings.from_env({"MODELCACHE_TEXT_ENGINE": engine or "torch"})
    artifact = build_plan(settings).by_role("text-embedding")[0]
    chosen = [f.path for f in select_files(artifact, [_remote(p) for p in repo])]
    weights = [p for p in chosen if p.endswith((".onnx", ".safetensors", ".bin", ".xml"))]
    assert weights == graphs
    assert {"config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json"} <= set(chosen)


def test_graph_file_picks_the_graph_the_engine_runs() -> None:
    snapshot = "huggingface/hub/models--a--b/snapshots/c"
    exports = "exports/models--a--b/c"
    both = [f"{snapshot}/config.json", f"{snapshot}/onnx/model.onnx", f"{snapshot}/onnx/model_quint8_avx2.onnx"]
    assert graph_file("onnx", both) == graph_file("openvino", both) == f"{snapshot}/onnx/model.onnx"
    assert graph_file("onnx-int8", both) == f"{snapshot}/onnx/model_quint8_avx2.onnx"
    made = [f"{snapshot}/model.safetensors", f"{exports}/model.onnx", f"{exports}/model_int8.onnx"]
    assert graph_file("onnx", made) == f"{exports}/model.onnx"
    assert graph_file("onnx-int8", made) == f"{exports}/model_int8.onnx"
    assert graph_file(None, made) is None and graph_file("onnx", made[:1]) is None
