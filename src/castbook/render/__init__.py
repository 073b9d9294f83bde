"""Work that combines generation, evaluation and jobs: generation jobs (batch render and
story mode build on them)."""

from castbook.render.generation_job import GenerationJobs, generation_job_input

__all__ = ["GenerationJobs", "generation_job_input"]
