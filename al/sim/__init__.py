"""`al-loop simulate`: how many labels a selection strategy saves, measured on any fully labelled data.yaml.

Per seed: a seed set and a pool are drawn from the train split (disjoint blocks where it is large enough, or given
as lists); the pool's labels are hidden (the simulated annotator reveals the picks' labels); one baseline is
trained on the seed set and shared by every arm of that seed; an upper bound is trained on the seed set and the
whole pool. Per protocol (converged: every point trained from the same start until the validation fitness stops
improving; matched: the same training batches from the baseline; chained: each round fine-tunes the last, as the
loop does) and arm (random, entropy, combined, most_boxes, diversity ...), the product's own loop runs its rounds.
The work folder holds one loop run per unit and simulation_state.json: a killed simulation continues where it
stopped. Results: simulation.csv, simulation_summary.json, simulation.md, simulation.png (docs/SIMULATE.md).

  spec     what a simulation runs and its checks
  data     the seed's seed set, hidden pool and upper-bound set
  unit     one arm or training point through the loop, and its rows
  runner   the units' order, side by side, the state file
  summary  labels to reach the upper bound's shares, paired intervals, checks and verdicts
  results  the result files (rendering: al.report.simulation)
"""

from al.sim.runner import simulate
from al.sim.spec import ArmFailed, SimSpec, SimulationError, auto_jobs, parse_list

__all__ = ["ArmFailed", "SimSpec", "SimulationError", "auto_jobs", "parse_list", "simulate"]
