"""How fast identity search answers "who is this?" against large libraries, and how much of
exact search's top 10 the approximate index finds.

    .venv/bin/python benchmarks/identify.py [--sizes 10000 1000000] [--queries 200]
        [--ann-max N] [--databases-at 10000] [--postgres start|skip]

The library is synthetic but made from real feature vectors: the face embeddings and
appearance descriptors of the labelled images in ../shared/eval (61 photos, 83 anime
crops). Character i starts from real image i mod 144 and moves away from it by Gaussian
noise (faces: σ = 0.045 per dimension, about 0.5 in distance, so they are different
people; appearance: σ = 0.06, renormalised); half the characters are photos (a face and
an appearance vector), half drawings (appearance only). A query is a character's vectors
with smaller noise (the same character in another picture). Timed: one query's search over
the in-memory index (`IdentityIndex.search`, top 10), exact (numpy) and approximate
(usearch HNSW + exact rescoring), per query, median and 95th percentile; the query's own
feature extraction is the Consistency Eval's cost and is not included. Recall@10: the
share of exact search's top-10 characters the approximate search returns, over all
queries; lost = queries whose exact top-1 the approximate search missed.

The ANN graphs' settings can be changed for a run (``--ann-dtype f16 --ann-expansion-add 64``;
``--ann-search-also 256`` searches the built graphs again with a wider beam); their build
is timed in wall and CPU seconds (usearch adds on every core), with their memory.

Also, at ``--databases-at`` sizes (10 000 by default), the whole search from a library
stored in SQLite and in PostgreSQL (a throwaway server from tests/support, ``--postgres
skip`` to leave it out): what ``POST /v1/identify`` does per query once the query's
features are computed — the check that the owner has references, the change counter, the
in-memory search, the matches' names — and, timed in the same run, the two queries every
search made before the change counter; loading the index, and the first search after a
reference was added (it must find the newcomer).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: PostgreSQL

from eval_data import FOLDERS, labelled, require_eval_dir

from castbook.evaluation import ImageFeatures, Scorer, identity
from castbook.evaluation.appearance import DIMENSIONS, AppearanceDescriptor
from castbook.evaluation.faces import FaceEmbedding
from castbook.evaluation.identity import IdentityIndex, IdentityVectors

FACE_NOISE = 0.045
APPEARANCE_NOISE = 0.06
QUERY_SHRINK = 0.5  # a query's noise relative to a character's


def real_features() -> list[ImageFeatures]:
    scorer = Scorer()
    if scorer.face_embedder is None:
        sys.exit("needs castbook[faces]: the library is built from real face embeddings")
    return [
        scorer.features(item.path, item.path.name)
        for folder in FOLDERS
        for item in labelled(folder)
    ]


def synthetic_library(
    real: list[IdentityVectors], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(appearance (size, DIMENSIONS), faces (size, 128), has_face (size,)) for ``size``
    characters."""
    photos = [v for v in real if v.faces is not None and len(v.faces)]
    base = rng.integers(0, len(real), size)
    appearance = np.stack([real[i].appearance for i in range(len(real))])[base]
    appearance = appearance + rng.normal(scale=APPEARANCE_NOISE, size=appearance.shape)
    appearance /= np.linalg.norm(appearance, axis=1, keepdims=True)
    face_base = np.stack([v.faces[0] for v in photos])
    faces = face_base[rng.integers(0, len(photos), size)]
    faces = faces + rng.normal(scale=FACE_NOISE, size=faces.shape)
    has_face = np.arange(size) % 2 == 0
    return appearance.astype(np.float32), faces.astype(np.float32), has_face


def entries(
    appearance: np.ndarray,
    faces: np.ndarray,
    has_face: np.ndarray,
    references: int = 1,
    rng: np.random.Generator | None = None,
) -> list:
    """Each character's ``references`` reference images: its vectors, and for a second or
    third reference the same character in another picture (a query's noise)."""
    empty = np.zeros((0, 128), dtype=np.float32)
    made = []
    for i in range(len(appearance)):
        for r in range(references):
            a, f = appearance[i], faces[i : i + 1]
            if r and rng is not None:
                a = a + rng.normal(scale=APPEARANCE_NOISE * QUERY_SHRINK, size=DIMENSIONS)
                a = (a / np.linalg.norm(a)).astype(np.float32)
                f = (f + rng.normal(scale=FACE_NOISE * QUERY_SHRINK, size=f.shape)).astype(
                    np.float32
                )
            made.append((f"c{i:07d}", IdentityVectors(a, f if has_face[i] else empty)))
    return made


def queries(
    appearance: np.ndarray,
    faces: np.ndarray,
    has_face: np.ndarray,
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[IdentityVectors]]:
    chosen = rng.choice(len(appearance), count, replace=False)
    made = []
    for i in chosen:
        a = appearance[i] + rng.normal(scale=APPEARANCE_NOISE * QUERY_SHRINK, size=DIMENSIONS)
        a = (a / np.linalg.norm(a)).astype(np.float32)
        f = None
        if has_face[i]:
            f = (faces[i] + rng.normal(scale=FACE_NOISE * QUERY_SHRINK, size=128)).astype(
                np.float32
            )[None, :]
        made.append(IdentityVectors(a, f if f is not None else np.zeros((0, 128), np.float32)))
    return chosen, made


def timed(index: IdentityIndex, asked: list[IdentityVectors], *, exact: bool) -> tuple:
    results, times, cpu = [], [], []
    for query in asked:
        started, started_cpu = time.perf_counter(), time.process_time()
        results.append(index.search(query, 10, exact=exact))
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return results, (times, cpu)


def describe(measured: tuple[list[float], list[float]]) -> str:
    times, cpu = measured
    ordered = sorted(times)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (
        f"wall median {1000 * statistics.median(times):7.2f} ms, p95 {1000 * p95:7.2f} ms; "
        f"CPU median {1000 * statistics.median(cpu):7.2f} ms"
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def whole_search(
    url: str,
    label: str,
    appearance: np.ndarray,
    faces: np.ndarray,
    has_face: np.ndarray,
    chosen: np.ndarray,
    asked: list[IdentityVectors],
    template: ImageFeatures,
) -> None:
    """What ``POST /v1/identify`` does per query once the query's features are computed, on a
    library of ``len(appearance)`` characters stored in the database at ``url``: the check
    that the owner has references, the search (the change counter, the in-memory index) and
    the names of the matches. Also: loading the index, and the first search after a change."""
    from castbook.blobs import BlobStore
    from castbook.db import Database
    from castbook.evaluation.identity_search import IdentitySearch
    from castbook.library import CharacterLibrary
    from castbook.library.identity_vectors import has_other_references

    database = Database(url)
    with tempfile.TemporaryDirectory() as folder:
        library = CharacterLibrary(database, BlobStore(Path(folder) / "blobs"))
        key = Scorer(faces=True).key
        started = time.perf_counter()
        store_library(library, key, appearance, faces, has_face)
        print(
            f"  {label}: {len(appearance):,} characters stored in "
            f"{time.perf_counter() - started:.1f} s"
        )
        queries = [(f"query {n}", as_features(template, q)) for n, q in enumerate(asked)]

        def search(query: tuple[str, ImageFeatures]) -> list:
            if not has_other_references(library):
                raise SystemExit("the library has no references")
            return IdentitySearch(library, None, key).identify([query], 10)  # type: ignore[arg-type]

        started, started_cpu = time.perf_counter(), time.process_time()
        search(queries[0])
        print(
            f"    first search (loads the index): {time.perf_counter() - started:.2f} s wall, "
            f"{time.process_time() - started_cpu:.2f} s CPU"
        )
        times, cpu, wrong = [], [], 0
        for i, query in zip(chosen, queries, strict=True):
            t, c = time.perf_counter(), time.process_time()
            [answer] = search(query)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            wrong += not answer.matches or answer.matches[0]["name"] != f"c{i}"
        print(
            f"    whole search, index current: {describe((times, cpu))}; top-1 not the "
            f"query's character: {wrong}/{len(queries)}"
        )
        old = [old_checks(library, key) for _ in range(20)]
        print(
            f"    the per-search checks this replaced (row count + unindexed images): median "
            f"{1000 * statistics.median(old):.1f} ms wall"
        )
        started, started_cpu = time.perf_counter(), time.process_time()
        # A newcomer drawn like the next query's character: it must rank beside it.
        library.create({"name": "newcomer"})
        twin = chosen[1]
        add_reference(library, key, appearance[twin], faces[twin] if has_face[twin] else None)
        [answer] = search(queries[1])
        print(
            f"    first search after a reference was added (reloads the index): "
            f"{time.perf_counter() - started:.2f} s wall, "
            f"{time.process_time() - started_cpu:.2f} s CPU; newcomer found: "
            f"{'yes' if any(m['name'] == 'newcomer' for m in answer.matches) else 'NO'}"
        )
    database.dispose()


def databases(postgres: str) -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as folder:
        yield "SQLite", f"sqlite:///{folder}/castbook.db"
    if postgres == "skip":
        return
    from tests.support.postgres import PostgresUnavailable, start_postgres

    base = Path(tempfile.mkdtemp(prefix="castbook-bench-pg-"))
    try:
        server = start_postgres(base)
    except PostgresUnavailable as exc:
        print(f"  PostgreSQL: not measured, no server could be started here: {exc}")
        return
    try:
        yield "PostgreSQL", server.create_database("identify_bench")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def as_features(template: ImageFeatures, vectors: IdentityVectors) -> ImageFeatures:
    found = None
    if vectors.faces is not None:
        found = tuple(FaceEmbedding(tuple(map(float, f)), (0, 0, 1, 1)) for f in vectors.faces)
    return replace(
        template,
        appearance=AppearanceDescriptor(tuple(map(float, vectors.appearance))),
        faces=found,
    )


def store_library(
    library, key: str, appearance: np.ndarray, faces: np.ndarray, has_face: np.ndarray
) -> None:
    """One reference image per character, with its stored vectors (as indexing leaves them)."""
    from sqlalchemy import insert

    from castbook.db import CharacterRow, IdentityVectorRow, ReferenceImageRow

    now = datetime.now(UTC)
    empty = np.zeros((0, 128), dtype=np.float32)
    chunk = 5000
    for begin in range(0, len(appearance), chunk):
        numbers = range(begin, min(begin + chunk, len(appearance)))
        with library.database.session() as session:
            session.execute(
                insert(CharacterRow),
                [
                    dict(
                        id=f"{i:032x}",
                        owner=library.owner,
                        name=f"c{i}",
                        name_key=f"c{i}",
                        created_at=now,
                        updated_at=now,
                    )
                    for i in numbers
                ],
            )
            ids = session.scalars(
                insert(ReferenceImageRow).returning(
                    ReferenceImageRow.id, sort_by_parameter_order=True
                ),
                [image_row(f"{i:032x}", f"{i:064x}") for i in numbers],
            ).all()
            rows = []
            for i, image_id in zip(numbers, ids, strict=True):
                vectors = IdentityVectors(appearance[i], faces[i : i + 1] if has_face[i] else empty)
                stored_a, stored_f = vectors.to_bytes()
                rows.append(
                    dict(
                        reference_image_id=image_id,
                        character_id=f"{i:032x}",
                        owner=library.owner,
                        feature_key=key,
                        appearance=stored_a,
                        faces=stored_f,
                        created_at=now,
                    )
                )
            session.execute(insert(IdentityVectorRow), rows)
            session.commit()


def image_row(character_id: str, sha256: str) -> dict:
    return dict(
        character_id=character_id,
        position=0,
        sha256=sha256,
        media_type="image/png",
        width=1,
        height=1,
        byte_size=1,
        is_primary=True,
        thumbnail_sha256=sha256,
        thumbnail_media_type="image/webp",
    )


def add_reference(library, key: str, appearance: np.ndarray, face: np.ndarray | None) -> None:
    """A reference for the character just added, indexed as ``castbook identify`` would."""
    from sqlalchemy import insert, select

    from castbook.db import CharacterRow, IdentityVectorRow, ReferenceImageRow

    with library.database.session() as session:
        character_id = session.scalar(
            select(CharacterRow.id).where(CharacterRow.name == "newcomer")
        )
        [image_id] = session.scalars(
            insert(ReferenceImageRow).returning(ReferenceImageRow.id),
            [image_row(character_id, "f" * 64)],
        ).all()
        faces = np.zeros((0, 128), np.float32) if face is None else face[None, :]
        stored_a, stored_f = IdentityVectors(appearance, faces).to_bytes()
        session.execute(
            insert(IdentityVectorRow),
            [
                dict(
                    reference_image_id=image_id,
                    character_id=character_id,
                    owner=library.owner,
                    feature_key=key,
                    appearance=stored_a,
                    faces=stored_f,
                    created_at=datetime.now(UTC),
                )
            ],
        )
        session.commit()


def old_checks(library, key: str) -> float:
    """The two queries every search made before the change counter: the owner's vector rows
    counted (and their highest id), and reference images without vectors looked for."""
    from sqlalchemy import func, select

    from castbook.db import CharacterRow, IdentityVectorRow, ReferenceImageRow

    started = time.perf_counter()
    with library.database.session() as session:
        session.execute(
            select(func.count(IdentityVectorRow.id), func.max(IdentityVectorRow.id)).where(
                IdentityVectorRow.owner == library.owner, IdentityVectorRow.feature_key == key
            )
        ).one()
    indexed = (
        select(IdentityVectorRow.reference_image_id)
        .where(IdentityVectorRow.feature_key == key)
        .scalar_subquery()
    )
    with library.database.session() as session:
        session.execute(
            select(ReferenceImageRow.id, CharacterRow.id, CharacterRow.name)
            .join(CharacterRow, CharacterRow.id == ReferenceImageRow.character_id)
            .where(CharacterRow.owner == library.owner, ReferenceImageRow.id.not_in(indexed))
        ).all()
    return time.perf_counter() - started


def report_recall(index: IdentityIndex, chosen: np.ndarray, exact: list, approximate: list) -> None:
    found = sum(
        len({m.character_id for m in want} & {m.character_id for m in got})
        for want, got in zip(exact, approximate, strict=True)
    )
    wanted = sum(len(want) for want in exact)
    lost = sum(
        1
        for want, got in zip(exact, approximate, strict=True)
        if want[0].character_id not in {m.character_id for m in got}
    )
    right = sum(
        1 for i, want in zip(chosen, exact, strict=True) if want[0].character_id == f"c{i:07d}"
    )
    print(
        f"  recall@10 (approximate vs exact): {found / wanted:.4f} (goal ≥ 0.99); exact top-1 "
        f"missed by approximate: {lost}; exact top-1 is the query's own character: "
        f"{right}/{len(exact)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--ann-max",
        type=int,
        default=1_000_000,
        help="build and measure the ANN index only up to this many characters (its build "
        "takes minutes per 100 000 on 2 busy cores)",
    )
    parser.add_argument(
        "--references",
        type=int,
        default=1,
        help="reference images per character (more than one: their set counts, "
        "castbook.evaluation.reference_set)",
    )
    parser.add_argument(
        "--databases-at",
        type=int,
        nargs="*",
        default=[10_000],
        help="at these sizes also time the whole search from a stored library (SQLite, PostgreSQL)",
    )
    parser.add_argument(
        "--postgres",
        choices=("start", "skip"),
        default="start",
        help="start a throwaway PostgreSQL server for the whole-search timing (tests/support)",
    )
    parser.add_argument("--ann-dtype", choices=("f32", "f16", "bf16", "i8"))
    parser.add_argument("--ann-connectivity", type=int)
    parser.add_argument("--ann-expansion-add", type=int)
    parser.add_argument("--ann-expansion-search", type=int)
    parser.add_argument(
        "--ann-search-also",
        type=int,
        nargs="*",
        default=[],
        help="also search the built graphs with these expansion_search values",
    )
    args = parser.parse_args()
    if args.references < 1:
        parser.error(f"--references must be at least 1, got {args.references}")
    for name in ("dtype", "connectivity", "expansion_add", "expansion_search"):
        if getattr(args, f"ann_{name}") is not None:
            identity.HNSW_SETTINGS[name] = getattr(args, f"ann_{name}")
    require_eval_dir()
    print(f"cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rng = np.random.default_rng(0)
    features = real_features()
    real = [IdentityVectors.of(f) for f in features]
    print(f"real vectors: {len(real)} images of ../shared/eval")
    for size in args.sizes:
        appearance, faces, has_face = synthetic_library(real, size, rng)
        chosen, asked = queries(appearance, faces, has_face, args.queries, rng)
        started = time.perf_counter()
        index = IdentityIndex(entries(appearance, faces, has_face, args.references, rng))
        built = time.perf_counter() - started
        print(
            f"\n== {size:,} characters ({int(has_face.sum()):,} with a face), "
            f"{args.references} reference(s) each, {len(asked)} queries"
        )
        print(f"  exact index built in {built:.1f} s")
        exact, exact_times = timed(index, asked, exact=True)
        print(f"  exact search:       {describe(exact_times)}")
        if size > args.ann_max:
            print(f"  ANN index not built (over --ann-max {args.ann_max:,})")
        else:
            started, started_cpu = time.perf_counter(), time.process_time()
            graphs = index._ann_indexes()
            held = sum(g.memory_usage for g in graphs.values() if g is not None)
            print(
                f"  ANN index (usearch HNSW, {identity.HNSW_SETTINGS}) built in "
                f"{time.perf_counter() - started:.1f} s wall, "
                f"{time.process_time() - started_cpu:.1f} s CPU (all threads); graphs hold "
                f"{held / 1e6:,.0f} MB; process peak RSS {peak_rss_mb():,.0f} MB"
            )
            for expansion in [identity.HNSW_SETTINGS["expansion_search"], *args.ann_search_also]:
                identity.HNSW_SETTINGS["expansion_search"] = expansion  # candidates too
                for graph in graphs.values():
                    if graph is not None:
                        graph.expansion_search = expansion
                approximate, ann_times = timed(index, asked, exact=False)
                print(f"  approximate search (expansion_search {expansion}): {describe(ann_times)}")
                report_recall(index, chosen, exact, approximate)
        print(f"  used by default: {'approximate' if index.approximate else 'exact'}")
        print(f"  load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if size in args.databases_at:
            for label, url in databases(args.postgres):
                whole_search(url, label, appearance, faces, has_face, chosen, asked, features[0])
        del index, exact


if __name__ == "__main__":
    main()
