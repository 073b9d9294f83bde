"""Model management against a fake Hugging Face hub on 127.0.0.1 (the wire format
huggingface_hub speaks): the built-in ``sd15-ip-adapter`` preset is pulled file by file from
tiny repositories laid out like the real ones, then generates; faults (a dropped connection,
a wrong hash, a cancel, gated and missing repositories) leave nothing that looks installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("diffusers")

from castbook.errors import GenerationCancelled, ModelDownloadError, ModelNotAvailableError
from castbook.generation import BUILTIN_PRESETS, Mode, PreparedRequest, Preset
from castbook.generation.request import GenerationRequest
from castbook.models import (
    ModelPart,
    PartState,
    PullProgress,
    SizeBook,
    estimated_size,
    format_bytes,
    models_of,
    plan_pull,
    preset_parts,
    pull,
    remove_preset,
    require_installed,
)
from tests.support.fake_hub import FakeHub
from tests.support.hub_models import IP_ADAPTER_REPO, SD15_REPO, decoys

SD15 = next(p for p in BUILTIN_PRESETS if p.id == "sd15-ip-adapter")
ANIMATEDIFF = next(p for p in BUILTIN_PRESETS if p.id == "animatediff-sd15")


@pytest.fixture
def hub(model_hub: FakeHub) -> FakeHub:
    return model_hub


@pytest.fixture
def cache(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Hugging Face cache of this test, with HF_ENDPOINT pointing at the fake hub."""
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return tmp_path / "hf-cache"


def gets(hub: FakeHub, repo_id: str) -> list[str]:
    """The files of ``repo_id`` whose content the hub sent (GET of resolve URLs)."""
    marker = f"/{repo_id}/resolve/"
    return [
        r.path.split(marker, 1)[1].split("/", 1)[1]
        for r in hub.log
        if r.method == "GET" and marker in r.path and r.status in (200, 206)
    ]


def pulled(preset: Preset = SD15, events: list[PullProgress] | None = None):
    plan = plan_pull(preset.id, preset_parts(preset), preset.options)
    return pull(plan, events.append if events is not None else None)


def request(**fields) -> PreparedRequest:
    wanted = GenerationRequest(
        mode=Mode.T2I, prompt="a portrait", width=256, height=256, steps=1, **fields
    )
    return PreparedRequest(request=wanted, prompt="a portrait", negative_prompt="", seed=7)


# ---------------------------------------------------------------------------- parts and plans


def test_built_in_presets_declare_their_parts_with_exact_files() -> None:
    roles = {p.id: [part.role for part in preset_parts(p)] for p in BUILTIN_PRESETS}
    assert roles["sd15-ip-adapter"] == ["model", "ip_adapter", "image_encoder"]
    assert roles["animatediff-sd15"] == ["model", "ip_adapter", "image_encoder", "motion_adapter"]
    assert roles["svd-i2v"] == ["model"]
    assert roles["openai-images"] == roles["gemini-image"] == roles["comfyui"] == []
    model = preset_parts(SD15)[0]
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in model.files
    assert not any("safety_checker" in f or f.endswith(".ckpt") for f in model.files)
    ip_adapter, encoder = preset_parts(SD15)[1:]
    assert ip_adapter.files == ("models/ip-adapter_sd15.safetensors",)
    assert "models/image_encoder/model.safetensors" in encoder.files


def test_the_plan_names_only_the_files_the_preset_loads(cache: Path, hub: FakeHub) -> None:
    plan = plan_pull(SD15.id, preset_parts(SD15), SD15.options)
    names = {(f.repo_id, f.filename) for f in plan.files}
    for repo_id, files in decoys().items():
        assert not names & {(repo_id, name) for name in files}
    assert (SD15_REPO, "unet/diffusion_pytorch_model.fp16.safetensors") in names
    assert (IP_ADAPTER_REPO, "models/image_encoder/model.safetensors") in names
    assert (SD15_REPO, "feature_extractor/preprocessor_config.json") in names  # optional, there
    hub_sizes = {(f.repo_id, f.filename): hub.file(f.repo_id, f.filename).size for f in plan.files}
    assert {(f.repo_id, f.filename): f.size for f in plan.files} == hub_sizes
    assert plan.download_bytes == plan.total_bytes == sum(hub_sizes.values())
    assert gets(hub, SD15_REPO) == []  # planning downloads nothing


# ---------------------------------------------------------------------------- pulling


def test_pull_then_generate_with_the_built_in_preset(cache: Path, hub: FakeHub) -> None:
    from castbook.generation.diffusers_backend import DiffusersBackend

    assert models_of(SD15).state == "missing"
    events: list[PullProgress] = []
    plan = pulled(SD15, events)
    report = models_of(SD15)
    assert report.state == "installed" and report.runnable
    assert report.size_on_disk == plan.total_bytes
    for repo_id, names in decoys().items():
        assert not set(gets(hub, repo_id)) & set(names), "a file the preset never loads came down"
    assert sorted(gets(hub, SD15_REPO) + gets(hub, IP_ADAPTER_REPO)) == sorted(
        f.filename for f in plan.files
    )
    done = [e.done_bytes for e in events]
    assert done == sorted(done) and events[-1].done_bytes == events[-1].total_bytes > 0
    assert events[-1].files_done == events[-1].files_total == len(plan.files)
    commit = hub.repos[SD15_REPO].commit
    assert (
        cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5/refs/main"
    ).read_text() == commit

    backend = DiffusersBackend(SD15, device="cpu")
    red = __import__("PIL.Image", fromlist=["Image"]).new("RGB", (64, 64), (200, 30, 30))
    result = backend.generate(
        PreparedRequest(
            request=GenerationRequest(
                mode=Mode.T2I, prompt="a portrait", width=256, height=256, steps=1
            ),
            prompt="a portrait",
            negative_prompt="",
            seed=7,
            references=(red,),
        ),
        lambda event: None,
    )
    assert len(result.images) == 1 and result.images[0].size == (256, 256)
    assert result.metadata["model"] == SD15_REPO and result.metadata["reference_scale"] > 0


def test_a_second_pull_downloads_nothing(cache: Path, hub: FakeHub) -> None:
    pulled()
    before = len(gets(hub, SD15_REPO))
    plan = plan_pull(SD15.id, preset_parts(SD15), SD15.options)
    assert plan.download_bytes == 0 and not plan.to_download
    pull(plan)
    assert len(gets(hub, SD15_REPO)) == before


def test_sizes_the_hub_reported_are_known_offline(cache: Path, tmp_path: Path) -> None:
    sizes = SizeBook(tmp_path / "home")
    before = models_of(SD15, sizes)  # never asked: the sizes computed from the architectures
    assert before.estimated and before.download_size == sum(
        estimated_size(part) or 0 for part in preset_parts(SD15)
    )
    assert before.download_size > 4e9  # the real weights, not the tiny test repositories
    assert before.pull_command().endswith(f"(≈{format_bytes(before.download_size)})")
    plan = plan_pull(SD15.id, preset_parts(SD15), SD15.options)
    sizes.record(plan)
    again = SizeBook(tmp_path / "home")  # read back from $CASTBOOK_HOME/model-sizes.json
    report = models_of(SD15, again)
    assert report.download_size == plan.total_bytes and not report.estimated
    assert report.missing_size == plan.total_bytes
    size = format_bytes(plan.total_bytes)
    assert report.pull_command() == f"castbook models pull sd15-ip-adapter  ({size})"


def test_a_dropped_connection_is_resumed_with_a_range_request(
    cache: Path, hub: FakeHub, tmp_path: Path
) -> None:
    big = tmp_path / "weights.safetensors"
    big.write_bytes(os.urandom(24 * 2**20))
    hub.add_repo("castbook-tests/big", {"config.json": b"{}", "weights.safetensors": big})
    hub.drop_after("castbook-tests/big", "weights.safetensors", 15 * 2**20)
    part = ModelPart("model", "castbook-tests/big", ("config.json", "weights.safetensors"))
    plan = pull(plan_pull("big", [part], {}))
    ranges = [r.range for r in hub.log if r.path.endswith("/weights.safetensors") and r.range]
    assert ranges and ranges[0].startswith("bytes=") and not ranges[0].startswith("bytes=0-")
    assert hub.bytes_sent("castbook-tests/big", "weights.safetensors") < 2 * big.stat().st_size
    stored = cache / "models--castbook-tests--big/snapshots" / plan.files[0].commit
    assert (stored / "weights.safetensors").read_bytes() == big.read_bytes()


def test_a_file_whose_hash_does_not_match_is_removed(cache: Path, hub: FakeHub) -> None:
    from dataclasses import replace

    plan = plan_pull(SD15.id, preset_parts(SD15), SD15.options)
    victim = next(f for f in plan.files if f.filename.startswith("unet/") and f.sha256)
    plan.files[plan.files.index(victim)] = replace(victim, sha256="0" * 64)
    with pytest.raises(ModelDownloadError, match="does not match the hash"):
        pull(plan)
    snapshot = cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5/snapshots"
    assert not list(snapshot.rglob("diffusion_pytorch_model.fp16.safetensors"))
    assert models_of(SD15).state != "installed"


def test_without_hash_checks_only_sizes_are_checked(cache: Path, hub: FakeHub) -> None:
    from dataclasses import replace

    plan = plan_pull(SD15.id, preset_parts(SD15), SD15.options)
    plan.files[:] = [replace(f, sha256="0" * 64) if f.sha256 else f for f in plan.files]
    pull(plan, verify_hashes=False)  # the hashes are wrong, but nobody looked
    assert models_of(SD15).runnable


def test_a_cancelled_pull_leaves_no_partial_file_and_nothing_installed(
    cache: Path, hub: FakeHub
) -> None:
    seen: list[PullProgress] = []

    def cancel_once_started(event: PullProgress) -> None:
        seen.append(event)
        if event.files_done >= 3:
            raise GenerationCancelled("cancelled")

    plan = plan_pull(SD15.id, preset_parts(SD15), SD15.options)
    with pytest.raises(GenerationCancelled):
        pull(plan, cancel_once_started)
    assert not list(cache.rglob("*.incomplete"))
    report = models_of(SD15)
    assert report.state == "partial" and not report.runnable  # 3 files came, not the rest
    with pytest.raises(ModelNotAvailableError):
        require_installed(SD15)
    pull(plan_pull(SD15.id, preset_parts(SD15), SD15.options))  # the rest comes later
    assert models_of(SD15).runnable


def test_a_gated_repository_says_where_to_accept_the_licence(
    cache: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("castbook-tests/gated", {"config.json": b"{}"}, gated=True, token="hf_letmein")
    part = ModelPart("model", "castbook-tests/gated", ("config.json",))
    with pytest.raises(ModelDownloadError) as refused:
        pull(plan_pull("gated", [part], {}))
    message = str(refused.value)
    assert f"accept its licence at {hub.endpoint}/castbook-tests/gated" in message
    assert "HF_TOKEN" in message and "\n" not in message
    monkeypatch.setenv("HF_TOKEN", "hf_letmein")
    pull(plan_pull("gated", [part], {}))
    assert (cache / "models--castbook-tests--gated/refs/main").is_file()


def test_a_repository_the_hub_does_not_have(cache: Path, hub: FakeHub) -> None:
    part = ModelPart("model", "castbook-tests/nowhere", ("config.json",))
    with pytest.raises(ModelDownloadError, match=r"castbook-tests/nowhere was not found on"):
        plan_pull("nowhere", [part], {})


def test_a_repository_without_the_variant_files_says_what_to_change(
    cache: Path, hub: FakeHub
) -> None:
    fp32 = Preset(
        id="fp32-only",
        backend="diffusers",
        model=IP_ADAPTER_REPO,  # has no unet at all: every weight pattern is missing
        modes=(Mode.T2I,),
        options={"family": "sd15", "variant": "fp16"},
    )
    with pytest.raises(ModelDownloadError, match=r'has no .*unet/.*variant = ""'):
        plan_pull(fp32.id, preset_parts(fp32), fp32.options)


def test_an_unreachable_hub_is_one_clear_error(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelDownloadError) as refused:
        plan_pull(SD15.id, preset_parts(SD15), SD15.options)
    assert str(refused.value).startswith("cannot reach the Hugging Face hub at http://127.0.0.1:9")
    assert models_of(SD15).state == "missing"


# ---------------------------------------------------------------------------- status and checks


def test_the_missing_model_check_comes_before_any_loading(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from castbook.generation import diffusers_backend

    def never(*_: object) -> None:
        raise AssertionError("torch and diffusers were imported for a preset that cannot run")

    monkeypatch.setattr(diffusers_backend, "import_stack", never)
    with pytest.raises(ModelNotAvailableError) as missing:
        diffusers_backend.DiffusersBackend(SD15).generate(request(), lambda event: None)
    message = str(missing.value)
    for part in (f"model {SD15_REPO}", f"ip adapter {IP_ADAPTER_REPO}", "image encoder"):
        assert part in message
    assert "castbook models pull sd15-ip-adapter" in message


def test_an_interrupted_download_shows_as_partial(cache: Path, hub: FakeHub) -> None:
    plan = plan_pull(SD15.id, preset_parts(SD15), SD15.options)
    pull(plan)
    repo = cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    unet = repo / "snapshots" / hub.repos[SD15_REPO].commit / "unet"
    blob = (unet / "diffusion_pytorch_model.fp16.safetensors").resolve()
    (unet / "diffusion_pytorch_model.fp16.safetensors").unlink()
    blob.rename(blob.with_name(blob.name + ".1234abcd.incomplete"))  # what a killed pull leaves
    status = models_of(SD15).parts[0]
    assert status.state is PartState.PARTIAL and status.downloading
    assert "unet/diffusion_pytorch_model*.safetensors" not in status.missing_files
    assert any(m.startswith("unet/") for m in status.missing_files)
    pull(plan_pull(SD15.id, preset_parts(SD15), SD15.options))
    assert models_of(SD15).runnable
    assert not list(repo.rglob("*.incomplete")), "the stale partial file was not cleaned up"


def test_a_local_folder_part_is_reported_as_such(tmp_path: Path) -> None:
    folder = tmp_path / "sd15"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    mine = Preset(id="mine", backend="diffusers", model=str(folder), modes=(Mode.T2I,), options={})
    report = models_of(mine)
    assert report.state == "local folder" and report.runnable and not report.pullable
    gone = Preset(
        id="gone", backend="diffusers", model=str(tmp_path / "x"), modes=(Mode.T2I,), options={}
    )
    with pytest.raises(ModelNotAvailableError, match="is not a folder on this machine"):
        require_installed(gone)


# ---------------------------------------------------------------------------- removing


def test_remove_keeps_files_another_installed_preset_loads(cache: Path, hub: FakeHub) -> None:
    plain = Preset(
        id="plain-sd15",
        backend="diffusers",
        model=SD15_REPO,
        modes=(Mode.T2I,),
        options={"family": "sd15", "variant": "fp16"},
    )
    plan = pulled(SD15)
    assert models_of(plain).runnable  # the same model files, no adapter
    removed, freed = remove_preset(SD15, [SD15, plain, ANIMATEDIFF])
    assert removed and all(name.startswith(IP_ADAPTER_REPO) for name in removed)
    adapter_bytes = sum(f.size for f in plan.files if f.repo_id == IP_ADAPTER_REPO)
    assert freed == adapter_bytes
    assert models_of(plain).runnable and not models_of(SD15).runnable
    assert not (cache / "models--h94--IP-Adapter").exists()
    removed, _ = remove_preset(plain, [SD15, plain])
    assert removed and not (cache / "models--stable-diffusion-v1-5--stable-diffusion-v1-5").exists()


# ---------------------------------------------------------------------------- doctor


def test_small_gpus_load_with_model_cpu_offload() -> None:
    from castbook.models.doctor import Device, load_plan

    small, large = Device("cuda", "T4", 5.6), Device("cuda", "H100", 79.1)
    assert load_plan("sd15", small, {}) == {
        "device": "cuda", "dtype": "float16", "offload": "model",
        "offload_reason": "5.6 GB of GPU memory < 6.0 GB for sd15",
    }  # fmt: skip
    assert load_plan("sd15", large, {})["offload"] == "none"
    assert load_plan("sdxl", Device("cuda", "A10G", 11.0), {})["offload"] == "model"
    assert load_plan("sdxl", small, {"offload": "none"})["offload"] == "none"
    cpu = load_plan("sdxl", Device("cpu", "CPU", None), {})
    assert (cpu["dtype"], cpu["offload"]) == ("float32", "none")


def test_a_backend_whose_packages_are_missing_is_not_runnable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gemini backend without google-genai (the gemini extra) is listed as it is: not
    runnable, with the command that installs it; and generating says the same at once."""
    import castbook.models.status as status

    gemini = next(p for p in BUILTIN_PRESETS if p.backend == "gemini")
    real = status._findable
    monkeypatch.setattr(status, "_findable", lambda name: name != "google.genai" and real(name))
    report = models_of(gemini)
    assert report.missing_packages == ("google.genai",)
    assert not report.runnable
    assert report.state == "missing packages"
    assert report.to_json()["install"] == "pip install 'castbook[gemini]'"
    with pytest.raises(ModelNotAvailableError, match=r"google\.genai.*castbook\[gemini\]"):
        require_installed(gemini)
    monkeypatch.setattr(status, "_findable", real)
    assert models_of(gemini).missing_packages == ()  # the suite installs the gemini extra
    assert status.missing_packages("no-such-backend") == ()
