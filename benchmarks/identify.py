"""How fast identity search answers "who is this?" against large libraries, and how much of
exact search's top 10 the approximate index finds.

    .venv/bin/python benchmarks/identify.py [--sizes 10000 1000000] [--queries 200]

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

Also timed at 10 000 characters: loading the index from stored rows (SQLite, as
`castbook identify` does once per change of the library).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval_data import FOLDERS, labelled, require_eval_dir

from castbook.evaluation import Scorer
from castbook.evaluation.appearance import DIMENSIONS
from castbook.evaluation.identity import IdentityIndex, IdentityVectors

FACE_NOISE = 0.045
APPEARANCE_NOISE = 0.06
QUERY_SHRINK = 0.5  # a query's noise relative to a character's


def real_vectors() -> list[IdentityVectors]:
    scorer = Scorer()
    if scorer.face_embedder is None:
        sys.exit("needs castbook[faces]: the library is built from real face embeddings")
    vectors = []
    for folder in FOLDERS:
        for item in labelled(folder):
            vectors.append(IdentityVectors.of(scorer.features(item.path, item.path.name)))
    return vectors


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


def load_from_sqlite(appearance: np.ndarray, faces: np.ndarray, has_face: np.ndarray) -> None:
    """Store 10 000 characters' vectors in a SQLite library and time loading the index."""
    from castbook.blobs import BlobStore
    from castbook.db import CharacterRow, Database, IdentityVectorRow, ReferenceImageRow
    from castbook.evaluation.identity_search import IdentitySearch
    from castbook.library import CharacterLibrary

    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite:///{folder}/castbook.db")
        library = CharacterLibrary(database, BlobStore(Path(folder) / "blobs"))
        now = datetime.now(UTC)
        key = Scorer(faces=True).key
        with database.session() as session:
            for i in range(len(appearance)):
                cid = f"{i:032x}"
                session.add(
                    CharacterRow(
                        id=cid,
                        owner=library.owner,
                        name=f"c{i}",
                        name_key=f"c{i}",
                        created_at=now,
                        updated_at=now,
                    )
                )
                image = ReferenceImageRow(
                    character_id=cid,
                    position=0,
                    sha256=f"{i:064x}",
                    media_type="image/png",
                    width=1,
                    height=1,
                    byte_size=1,
                    is_primary=True,
                    thumbnail_sha256=f"{i:064x}",
                    thumbnail_media_type="image/webp",
                )
                session.add(image)
                session.flush()
                vectors = IdentityVectors(
                    appearance[i], faces[i : i + 1] if has_face[i] else np.zeros((0, 128))
                )
                stored_a, stored_f = vectors.to_bytes()
                session.add(
                    IdentityVectorRow(
                        reference_image_id=image.id,
                        character_id=cid,
                        owner=library.owner,
                        feature_key=key,
                        appearance=stored_a,
                        faces=stored_f,
                        created_at=now,
                    )
                )
            session.commit()
        started = time.perf_counter()
        index = IdentitySearch(library, None, key).index()  # type: ignore[arg-type]
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        IdentitySearch(library, None, key).index()  # type: ignore[arg-type]
        cached = time.perf_counter() - started
        checks = []
        for _ in range(20):
            started = time.perf_counter()
            search = IdentitySearch(library, None, key)  # type: ignore[arg-type]
            search.update_index()  # nothing to add: one query
            search.index()  # unchanged: the stamp query
            checks.append(time.perf_counter() - started)
        print(
            f"  index from SQLite rows: {len(index)} characters loaded in {loaded:.2f} s; "
            f"later searches check the rows' stamp only ({1000 * cached:.1f} ms); "
            f"a search's database checks (nothing unindexed, stamp): median "
            f"{1000 * statistics.median(checks):.1f} ms"
        )
        database.dispose()


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
    args = parser.parse_args()
    if args.references < 1:
        parser.error(f"--references must be at least 1, got {args.references}")
    require_eval_dir()
    print(f"cores: {os.cpu_count()}, load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rng = np.random.default_rng(0)
    real = real_vectors()
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
            started = time.perf_counter()
            index._ann_indexes()
            print(f"  ANN index (usearch HNSW) built in {time.perf_counter() - started:.1f} s")
            approximate, ann_times = timed(index, asked, exact=False)
            print(f"  approximate search: {describe(ann_times)}")
            report_recall(index, chosen, exact, approximate)
        print(f"  used by default: {'approximate' if index.approximate else 'exact'}")
        print(f"  load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if size == 10_000:
            load_from_sqlite(appearance, faces, has_face)
        del index, exact


if __name__ == "__main__":
    main()
