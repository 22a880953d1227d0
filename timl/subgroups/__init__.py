"""Results by patient subgroup (sex, anatomical site, age bands): which groups a test set holds
(:mod:`timl.subgroups.spec`) and each group's scores, their intervals, the gaps between groups and their files
(:mod:`timl.subgroups.scores`). ``timl.inspect --subgroups`` and the training table's ``subgroups`` column use it.
"""

from timl.subgroups.scores import (DEFAULT_MIN_SIZE, PLOT_STEM, TABLE_FILE, GroupScores, SubgroupResults,
                                   score_subgroups, subgroup_metrics, subgroup_table, write_subgroup_report)
from timl.subgroups.spec import (SUBGROUPS_FORMS, UNKNOWN, SubgroupColumn, SubgroupSpec, parse_subgroups,
                                 read_subgroup_labels, subgroups_file)

__all__ = ["DEFAULT_MIN_SIZE", "PLOT_STEM", "TABLE_FILE", "GroupScores", "SubgroupResults", "score_subgroups",
           "subgroup_metrics", "subgroup_table", "write_subgroup_report", "SUBGROUPS_FORMS", "UNKNOWN",
           "SubgroupColumn", "SubgroupSpec", "parse_subgroups", "read_subgroup_labels", "subgroups_file"]
