"""The `modelcache` command line (typer). Every command reads the same settings."""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from modelcache import logs
from modelcache.errors import EXIT_INTERNAL, EXIT_VERIFY, ModelcacheError, VerificationError
from modelcache.layout import Layout
from modelcache.plan import Plan, build_plan
from modelcache.progress import human_bytes
from modelcache.settings import Settings

app = typer.Typer(
    name="modelcache",
    help="Fill one volume with verified, pinned model caches; check and repair it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _context() -> tuple[Settings, Layout, Plan]:
    settings = Settings.from_env()
    return settings, Layout(settings.models_dir.absolute()), build_plan(settings)


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


@app.command()
def fetch(
    refresh: Annotated[bool, typer.Option(help="Re-resolve branches to their newest commit.")] = False,
    deep: Annotated[bool, typer.Option(help="Re-hash every present file; re-fetch the ones that differ.")] = False,
    lockfile: Annotated[
        Path | None, typer.Option(help="Fetch exactly what this lockfile pins (MODELCACHE_LOCKFILE).")
    ] = None,
    plain: Annotated[bool, typer.Option(help="Plain log lines even on a terminal.")] = False,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Fill the volume from this OCI artifact (made by `modelcache push`) instead of the Hub: "
            "oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:DIGEST (MODELCACHE_FROM).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Download what the plan needs into the volume (the downloader's default command)."""
    from dataclasses import replace

    from modelcache.fetch import run_fetch
    from modelcache.fetch.policy import Cancelled
    from modelcache.progress import make_reporter

    settings = Settings.from_env()
    if lockfile is not None:
        settings = replace(settings, lockfile=lockfile)
    if from_ is not None:
        from modelcache.settings import parse_oci_reference

        settings = replace(settings, from_ref=parse_oci_reference(from_, where="--from"))
    try:
        run_fetch(settings, refresh=refresh, deep=deep, reporter=make_reporter(force_plain=plain))
    except (KeyboardInterrupt, Cancelled):
        _exit_interrupted()


@app.command()
def push(
    reference: Annotated[str, typer.Argument(help="Where to publish: oci://HOST[:PORT]/REPO:TAG.", show_default=False)],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Publish only this model (name or repo id as `ls` shows it); repeatable."),
    ] = None,
    mount_from: Annotated[
        list[str] | None,
        typer.Option(
            "--mount-from",
            help="Another repository of the same registry that may hold the blobs (an earlier push): they are "
            "linked across (cross-repository mount), not sent again; repeatable.",
        ),
    ] = None,
    image: Annotated[
        bool,
        typer.Option(
            "--image",
            help="Publish a container image instead (one uncompressed tar layer holding the volume's tree), "
            "for Kubernetes image volumes and KServe modelcars; `fetch --from` reads only the ModelPack form.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Publish the complete, verified volume to an OCI registry as a ModelPack artifact (one layer per file)."""
    from modelcache.fetch.oci import push as do_push
    from modelcache.progress import make_reporter
    from modelcache.settings import parse_oci_reference

    settings = Settings.from_env()
    ref = parse_oci_reference(reference, where="push", tag_only=True)
    reporter = make_reporter(force_plain=as_json)
    sources = tuple(
        parse_oci_reference(f"oci://{ref.host}/{m}:x", where="--mount-from").repository for m in mount_from or ()
    )
    if image:
        from modelcache.fetch.oci import push_image

        result = push_image(settings, ref, models=tuple(model or ()), reporter=reporter)
    else:
        result = do_push(settings, ref, models=tuple(model or ()), mount_from=sources, reporter=reporter)
    if as_json:
        _print_json(result.to_dict())
        return
    print(
        f"pushed {ref}: {result.digest}; {result.blobs} blob(s), {result.blobs_sent} sent "
        f"({human_bytes(result.bytes_sent)}), "
        + (f"{result.blobs_mounted} mounted from {', '.join(sources)}, " if result.blobs_mounted else "")
        + f"{result.blobs - result.blobs_sent - result.blobs_mounted} already there "
        f"({human_bytes(result.bytes_skipped)} skipped) in {result.seconds:.1f}s"
    )


@app.command()
def sign(
    key: Annotated[
        Path,
        typer.Option("--key", help="The site's private key (PEM, elliptic curve) to sign with.", show_default=False),
    ],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Sign only this model (name or repo id as `ls` shows it); repeatable."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign the volume's models with the site's key (OpenSSF model signing; `push` carries the signatures)."""
    from modelcache.signatures import sign_artifact
    from modelcache.volume_lock import read_lock

    _, layout, _ = _context()
    lock = read_lock(layout)
    if lock is None:
        raise VerificationError(
            f"no lock in {layout.root}: the volume is not complete, there is nothing to sign",
            remedy="run `modelcache fetch` first",
        )
    chosen = [a for a in lock.artifacts if not model or a.name in model or a.source in model]
    unknown = [m for m in model or () if not any(m in (a.name, a.source) for a in lock.artifacts)]
    if unknown:
        from modelcache.errors import ConfigError

        raise ConfigError(
            f"--model names {len(unknown)} model(s) the volume's lock does not hold: {', '.join(unknown)}",
            remedy="name models as `modelcache ls` lists them (the first column, or the repo id)",
        )
    signed = []
    with _writer(layout):
        for artifact in chosen:
            path = sign_artifact(layout, artifact, key)
            signed.append({"model": artifact.name, "signature": layout.rel(path)})
            if not as_json:
                print(f"signed {artifact.name} ({artifact.source}): {layout.rel(path)}")
    if as_json:
        _print_json(signed)


@app.command("lock")
def lock_cmd(
    upgrade: Annotated[
        bool, typer.Option("--upgrade", help="Move pins to what the configured revisions point at now.")
    ] = False,
    names: Annotated[
        list[str] | None, typer.Argument(help="With --upgrade: only these artifacts.", show_default=False)
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only say whether the lockfile matches the configuration (offline).")
    ] = False,
    lockfile: Annotated[
        Path | None, typer.Option(help="The lockfile (default: MODELCACHE_LOCKFILE, else ./models.lock).")
    ] = None,
    print_: Annotated[
        bool, typer.Option("--print", help="Print the new lockfile on stdout instead of writing it.")
    ] = False,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            help="Record where the pinned bytes are fetched from instead of the Hub: the artifact `modelcache push` "
            "made, by digest (oci://HOST/REPO@sha256:...); '' removes it.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pin every configured model (commit, files, sizes, sha256) in a lockfile, from metadata only."""
    from modelcache.errors import ConfigError
    from modelcache.models_lock import LOCKFILE_NAME, read_lockfile

    settings = Settings.from_env()
    path = lockfile or settings.lockfile or Path(LOCKFILE_NAME)
    if names and not upgrade:
        raise ConfigError("naming artifacts only makes sense with --upgrade", remedy="modelcache lock --upgrade NAME")
    if check:
        current = read_lockfile(path) if path.exists() else None
        problems = ["no lockfile"] if current is None else current.stale(build_plan(settings))
        if as_json:
            _print_json({"lockfile": str(path), "up_to_date": not problems, "problems": problems})
        else:
            for problem in problems:
                print(f"STALE {problem}")
            print(
                f"{path}: "
                + ("up to date" if not problems else f"{len(problems)} difference(s) from the configuration")
            )
            if problems:
                print(
                    "remedy: run `modelcache lock` (new artifacts) or `modelcache lock --upgrade` (move pins), then commit it"
                )
        if problems:
            raise typer.Exit(EXIT_VERIFY)
        return
    from modelcache.fetch.pinning import make_lockfile
    from modelcache.progress import PlainReporter

    if registry:
        from modelcache.settings import parse_oci_reference

        if parse_oci_reference(registry, where="--registry").digest is None:
            raise ConfigError(
                f"--registry {registry}: a lockfile names the artifact by digest, not by tag",
                remedy="give the digest `modelcache push` printed: oci://HOST/REPO@sha256:…",
            )
    result = make_lockfile(
        settings,
        path,
        upgrade=upgrade,
        names=tuple(names or ()),
        reporter=PlainReporter(),
        write=not print_,
        registry=registry,
    )
    if print_:
        from modelcache.models_lock import render

        sys.stdout.write(render(result.lockfile))
        logs.log(
            f"{len(result.lockfile.pins)} artifact(s): {len(result.resolved)} resolved, {len(result.kept)} kept, "
            f"{len(result.moved)} moved; {result.requests} metadata request(s)",
            event="locked",
            prefix=False,
        )
        return
    if as_json:
        _print_json(
            {
                "lockfile": str(path),
                "written": result.written,
                "resolved": result.resolved,
                "kept": result.kept,
                "moved": result.moved,
                "requests": result.requests,
                "seconds": round(result.seconds, 3),
                "digest": result.lockfile.digest,
            }
        )
        return
    state = "written" if result.written else "unchanged"
    print(
        f"{path} {state}: {len(result.lockfile.pins)} artifact(s), {len(result.resolved)} resolved, "
        f"{len(result.kept)} kept, {len(result.moved)} moved; {result.requests} metadata request(s) in "
        f"{result.seconds:.2f}s, no weights downloaded"
    )


@app.command("plan")
def plan_cmd(as_json: JsonOpt = False) -> None:
    """Show what the configuration asks for and what the volume's lock holds of it (offline)."""
    from modelcache.volume_lock import read_lock

    _settings, layout, plan = _context()
    try:
        lock = read_lock(layout)
    except VerificationError as exc:
        logs.log(
            f"warning: {exc.message}; showing every artifact as to fetch", event="lock_unreadable", level="warning"
        )
        lock = None
    locked = {a.spec: a for a in lock.artifacts} if lock else {}
    rows: list[dict[str, Any]] = []
    for a in plan.artifacts:
        held = locked.get(a.spec)
        rows.append(
            {
                "name": a.name,
                "role": a.role,
                "kind": a.kind,
                "source": a.source,
                "revision": a.revision,
                "sha256": a.sha256,
                "include": list(a.include) if a.include else None,
                "exclude": list(a.exclude),
                "dest": a.dest,
                "status": "locked" if held else "to fetch",
                "commit": held.commit if held else None,
                "files": len(held.files) if held else None,
                "bytes": held.size if held else None,
            }
        )
    if as_json:
        _print_json({"digest": plan.digest, "artifacts": rows})
        return
    print(f"plan {plan.digest[:12]} ({len(rows)} artifact(s)) for {layout.root}")
    for r in rows:
        size = human_bytes(r["bytes"]) if r["bytes"] is not None else "?"
        rev = f"@{r['revision']}" if r["revision"] else ""
        print(f"  {r['role']:15} {r['kind']:8} {r['source']}{rev}  -> {r['dest']}  [{r['status']}, {size}]")


@contextmanager
def _writer(layout: Layout, *, dry_run: bool = False):
    """Hold the volume lock while changing the volume; refuse at once while a downloader runs.

    A dry run changes nothing but still refuses while a downloader works: what it would
    list then (partial files, blobs not yet locked) is not what a real run would remove.
    """
    from modelcache.errors import LockTimeoutError
    from modelcache.progress import PlainReporter
    from modelcache.writer_lock import VolumeLock

    if dry_run and not os.access(layout.state, os.W_OK):
        yield  # a read-only mount: no downloader can be writing through it
        return
    layout.state.mkdir(parents=True, exist_ok=True)
    lock = VolumeLock(layout, 0, PlainReporter(), quiet=True)
    with lock as held:
        if not held:
            owner = layout.state / "fetch.owner"
            holder = owner.read_text().strip() if owner.exists() else "unknown"
            raise LockTimeoutError(
                f"a downloader ({holder}) is working on {layout.root}; nothing was changed",
                remedy="run this again when the download has finished (or stop the downloader first)",
            )
        yield


@app.command("verify")
def verify_cmd(
    deep: Annotated[bool, typer.Option(help="Hash every byte (sha256) instead of checking sizes.")] = False,
    workers: Annotated[int, typer.Option(min=0, max=64, help="Files hashed in parallel (0: MODELCACHE_WORKERS).")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Check the volume against the lock and the plan, offline. Exit 4 on any problem."""
    from modelcache.models_lock import configured
    from modelcache.verify import verify

    settings, layout, plan = _context()
    report = verify(
        layout,
        plan,
        deep=deep or settings.verify == "deep",
        workers=workers or settings.workers,
        lockfile=configured(settings),
    )
    if as_json:
        _print_json(report.to_dict())
    else:
        mode = "deep (sha256)" if report.deep else "fast (size)"
        for problem in report.problems:
            print(f"PROBLEM {problem.line()}")
        state = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        print(f"verify {mode}: {report.files} file(s), {human_bytes(report.bytes)} in {report.seconds:.2f}s: {state}")
        if not report.ok:
            files = any(p.issue not in ("drift", "lockfile", "no-lock") for p in report.problems)
            print(
                "remedy: "
                + (
                    VerificationError.default_remedy
                    if files
                    else "run `modelcache fetch`: it brings the volume to what the configuration asks for"
                )
            )
    if not report.ok:
        raise typer.Exit(EXIT_VERIFY)


@app.command("ls")
def ls_cmd(as_json: JsonOpt = False) -> None:
    """List the artifacts in the volume's lock."""
    from modelcache.volume_lock import read_lock

    _settings, layout, _plan = _context()
    lock = read_lock(layout)  # a damaged lock is an error (exit 4) here
    if lock is None:
        logs.log(f"no lock in {layout.root}: run `modelcache fetch`", event="no_lock", level="error")
        raise typer.Exit(EXIT_VERIFY)
    artifacts = lock.artifacts
    if as_json:
        _print_json(
            [
                {
                    "name": a.name,
                    "kind": a.kind,
                    "source": a.source,
                    "revision": a.revision,
                    "commit": a.commit,
                    "dest": a.dest,
                    "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in a.files],
                    "bytes": a.size,
                }
                for a in artifacts
            ]
        )
        return
    for a in artifacts:
        pin = f"@{a.commit[:12]}" if a.commit else ""
        print(f"{a.name:45} {a.kind:8} {len(a.files):4} file(s) {human_bytes(a.size):>10}  {a.source}{pin}")


@app.command()
def doctor(
    fix: Annotated[bool, typer.Option("--fix", help="Delete what was found (fetch then restores it).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find LFS pointer files, leftovers, orphan blobs, broken links, size mismatches, unknown files."""
    from modelcache import doctor as doc
    from modelcache.volume_lock import read_lock

    _settings, layout, _plan = _context()
    damaged = None
    try:
        lock = read_lock(layout)
    except VerificationError as exc:
        lock, damaged = None, exc.message
    findings = doc.diagnose(layout, lock, damaged_lock=damaged)
    repaired = []
    if fix:
        with _writer(layout):
            repaired = doc.fix(layout, findings)
    if as_json:
        _print_json({"findings": doc.to_dicts(findings), "repaired": doc.to_dicts(repaired)})
    else:
        for finding in findings:
            print(finding.line())
        print(f"doctor: {len(findings)} finding(s)" + (f", {len(repaired)} repaired" if fix else ""))
        if repaired:
            print("run `modelcache fetch` to bring back what was removed")
    if findings and not fix:
        raise typer.Exit(EXIT_VERIFY)


@app.command("show")
def show_cmd(
    name: Annotated[str, typer.Argument(help="Artifact name or repo id (see `modelcache plan` / `ls`).")],
    deep: Annotated[bool, typer.Option(help="Hash every file on disk against the lock.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """One artifact: source, revision and commit, and each file with size and sha256, in the lock and on disk."""
    from modelcache.manage import show

    _settings, layout, plan = _context()
    info = show(layout, plan, name, deep=deep)
    if as_json:
        _print_json(info)
        return
    rev = f"@{info['revision']}" if info["revision"] else ""
    print(f"{info['name']}  ({info['role'] or 'not configured'}, {info['kind']})")
    print(f"  source    {info['source']}{rev}")
    print(f"  commit    {info['commit'] or '-'}")
    print(f"  dest      {info['dest']}")
    print(f"  status    {info['status']}")
    for f in info["files"]:
        print(f"  {f['on_disk']:>9}  {human_bytes(f['size']):>10}  {f['sha256'][:16]}…  {f['path']}")
    if info["files"]:
        print(f"  {len(info['files'])} file(s), {human_bytes(info['bytes'])}")


@app.command("rm")
def rm_cmd(
    name: Annotated[str, typer.Argument(help="Artifact name or repo id (see `modelcache ls`).")],
    dry_run: Annotated[bool, typer.Option(help="Only say what would be removed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove one artifact from the volume and from the lock."""
    from modelcache.manage import remove

    _settings, layout, plan = _context()
    with _writer(layout, dry_run=dry_run):
        removed = remove(layout, plan, name, dry_run=dry_run)
    _print_removals(removed, dry_run, as_json)


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option(help="Only say what would be removed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove what the current plan no longer wants (other repos, old snapshots, orphan blobs)."""
    from modelcache.manage import prune as do_prune

    _settings, layout, plan = _context()
    with _writer(layout, dry_run=dry_run):
        removed = do_prune(layout, plan, dry_run=dry_run)
    _print_removals(removed, dry_run, as_json)


def _print_removals(removed, dry_run: bool, as_json: bool) -> None:
    total = sum(r.bytes for r in removed)
    if as_json:
        _print_json(
            {"dry_run": dry_run, "removed": [{"path": r.path, "bytes": r.bytes} for r in removed], "bytes": total}
        )
        return
    verb = "would remove" if dry_run else "removed"
    for r in removed:
        print(f"{verb} {r.path} ({human_bytes(r.bytes)})")
    print(f"{verb} {len(removed)} item(s), {human_bytes(total)}")


@app.command("export")
def export_cmd(
    bundle: Annotated[str, typer.Argument(help="The bundle file to write, or - for standard output.")],
) -> None:
    """Write the whole volume (its lock and every file it names) to one verified, deterministic tar bundle."""
    from modelcache.bundle import export
    from modelcache.progress import make_reporter
    from modelcache.volume_lock import read_lock

    _settings, layout, _plan = _context()
    lock = read_lock(layout)
    if lock is None:
        raise VerificationError(
            f"no lock in {layout.root}: the volume is not complete", remedy="run `modelcache fetch` first"
        )
    reporter = make_reporter(force_plain=bundle == "-")
    try:
        result = export(layout, lock, bundle, reporter=reporter)
    finally:
        reporter.close()
    logs.log(
        f"exported {result.files} file(s), {human_bytes(result.bytes)} to {bundle} in {result.seconds:.1f}s "
        f"({human_bytes(result.bytes / max(result.seconds, 1e-6))}/s)",
        event="exported",
        prefix=False,
        files=result.files,
        bytes=result.bytes,
        seconds=round(result.seconds, 3),
    )


@app.command("import")
def import_cmd(
    bundle: Annotated[str, typer.Argument(help="A bundle made by `modelcache export`, or - for standard input.")],
    deep: Annotated[bool, typer.Option(help="Also hash the files already in the volume before keeping them.")] = False,
) -> None:
    """Install a bundle into the volume, offline: every byte checked against its lock before it is visible."""
    from modelcache.bundle import import_bundle
    from modelcache.fetch.execute import ensure_writable
    from modelcache.models_lock import configured
    from modelcache.progress import make_reporter
    from modelcache.writer_lock import VolumeLock

    settings, layout, plan = _context()
    lockfile = configured(settings)
    ensure_writable(layout)
    reporter = make_reporter()
    try:
        with VolumeLock(layout, settings.lock_timeout, reporter):
            result = import_bundle(layout, plan, lockfile, bundle, deep=deep, reporter=reporter)
    finally:
        reporter.close()
    logs.log(
        f"imported {result.files} file(s), {human_bytes(result.bytes)} in {result.seconds:.1f}s; "
        f"{result.skipped} already present; lock written",
        event="imported",
        prefix=False,
        files=result.files,
        bytes=result.bytes,
        seconds=round(result.seconds, 3),
    )


@app.command()
def mlx(
    host_path: Annotated[
        str, typer.Option(help="Where the models directory is on the macOS host (a bind mount).")
    ] = "./models",
) -> None:
    """Print how a native macOS app (mlx_whisper, mlx_lm) uses the MLX repos in the volume."""
    _settings, layout, plan = _context()
    repos = [a for a in plan.artifacts if a.kind == "mlx"]
    if not repos:
        print("no MLX repos are configured: set MODELCACHE_MLX, e.g. mlx-community/whisper-tiny")
        raise typer.Exit(0)
    hf_home = f"{host_path.rstrip('/')}/{layout.rel(layout.hf_home)}"
    print("# Docker Desktop keeps named volumes inside its VM; macOS apps cannot read them.")
    print("# Bind-mount a host folder as the models volume instead (see docs/runbook.md), then:")
    print(f'export HF_HOME="{hf_home}"')
    print("export HF_HUB_OFFLINE=1   # read the cache only, never the network")
    for a in repos:
        print(f"# {a.source}@{a.revision}")
        if "whisper" in a.source.lower():
            print(f'mlx_whisper audio.wav --model "{a.source}"')
        else:
            print(f'mlx_lm.generate --model "{a.source}" --prompt "hello"')


@app.command()
def serve() -> None:
    """Run the model service: verify the volume, load every model, then listen (see MODELCACHE_HOST/PORT)."""
    from modelcache.service.main import serve as run_service

    run_service()


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _exit_interrupted() -> None:
    """Exit 130 now: a transfer thread stuck in a stalled read must not hold the process
    (its partial file and segment record are on disk; a re-run resumes them)."""
    fetching = len(sys.argv) > 1 and sys.argv[1] in ("fetch", "import")
    logs.log(
        "interrupted" + ("; partial files are kept and a re-run resumes them" if fetching else ""),
        event="interrupted",
        level="warning",
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def main() -> None:
    from modelcache.fetch.policy import Cancelled

    logs.configure()  # MODELCACHE_LOG_FORMAT: text or JSON lines, from the first line on
    logs.capture_native_output()  # and what native libraries and children write to fd 2
    signal.signal(signal.SIGTERM, _interrupt)  # `docker stop`: stop transfers, keep partial files
    try:
        app()
    except ModelcacheError as exc:
        logs.error(exc)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, Cancelled):
        _exit_interrupted()
    except Exception as exc:  # a bug: say so plainly
        import traceback

        traceback.print_exc()
        logs.log(f"internal error: {exc!r} (please report it)", event="internal_error", level="error")
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
