"""hydra-submitit's launchers, except that a lost job does not take the sweep down.

Hydra's submitit launcher waits on each job's `results()`, which raises for a job that never returned: one
cancelled, killed for memory, or out of time after its requeues (a local job killed by a signal alike). The
multirun then ends there, before the jobs after it are waited for and before the sweep report is written. These
launchers wait for every job, record a lost one as failed in its own results.json (the job itself could not), and
return: the sweep's report is written with that job marked, and the command exits non-zero as for any failed job.
"""

import logging
import math
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)
# Options of the executor itself rather than of each job's queue request (hydra-submitit's split).
EXECUTOR_OPTIONS = ("submitit_folder", "max_num_timeout")


class LostJobsRecorded(BaseSubmititLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster=self._EXECUTOR,
                                         **{f"{self._EXECUTOR}_max_num_timeout": self.params.get("max_num_timeout", 0)})
        executor.update_parameters(**self.queue_parameters())
        arguments = []
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
            arguments.append((list(overrides), "hydra.sweep.dir", number, f"job_id_for_{number}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*arguments))
        return [self.collected(job, overrides) for job, overrides in zip(jobs, job_overrides)]

    def queue_parameters(self) -> dict[str, Any]:
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        return {key if key in shared else f"{self._EXECUTOR}_{key}": value
                for key, value in self.params.items() if key not in EXECUTOR_OPTIONS}

    def collected(self, job, overrides: Sequence[str]) -> JobReturn:
        """The job's return, or for a lost job a failed return after its results.json says why."""
        try:
            return job.results()[0]
        except Exception as error:  # submitit's UncompletedJobError / FailedJobError, or what the job raised
            cause = lost_job_cause(job, error)
            log.error("job %s (%s) lost: %s", job.job_id, " ".join(overrides), cause)
            record_lost_job(self.job_folder(overrides), cause)
            # As a job that failed inside returns: NaN, which an optimising sweeper (Optuna) records as a failed trial.
            lost = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            lost._return_value = math.nan
            return lost

    def job_folder(self, overrides: Sequence[str]) -> Path:
        job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return Path(str(job.hydra.sweep.dir)) / str(job.hydra.sweep.subdir)


def lost_job_cause(job, error: BaseException) -> str:
    return (f"lost: submitit job {job.job_id} gave no result ({type(error).__name__}, submitit state {job.state}) -- "
            f"its log: {job.paths.stderr}; rerun the sweep with sweep.rerun_failed=true (a killed job resumes from "
            "its checkpoint)")


def record_lost_job(folder: Path, cause: str) -> None:
    """results.json marked failed with the cause, unless the job got to record its own end."""
    from splade_peft.results import COMPLETED, FAILED, JobResult

    try:
        earlier = JobResult.read(folder)
    except (OSError, ValueError):
        earlier = JobResult()  # killed before it wrote anything
    if earlier.status in (COMPLETED, FAILED):
        return
    folder.mkdir(parents=True, exist_ok=True)
    JobResult.from_payload({**earlier.to_payload(), "status": FAILED, "error": cause}).write(folder)


class LocalLauncher(LostJobsRecorded):
    _EXECUTOR = "local"


class SlurmLauncher(LostJobsRecorded):
    _EXECUTOR = "slurm"
