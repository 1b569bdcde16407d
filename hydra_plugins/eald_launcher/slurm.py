"""`hydra/launcher=submitit_slurm` in eald's config tree names this class. Its code is
eald.cluster.launcher; it is declared here because Hydra registers a launcher under the module
that defines it, and accepts only modules of the hydra_plugins namespace."""

from eald.cluster.launcher import SweepSlurmLauncher
from eald.log import quiet_hydra_notices

quiet_hydra_notices()  # also in the jobs, which import this module to unpickle the launcher


class SlurmLauncher(SweepSlurmLauncher):
    pass
