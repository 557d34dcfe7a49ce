"""The lab: the experiments run on the library (jobs, their configs and schema, workdirs, reports, figures,
the command line). The lab imports the library; the library never imports the lab (tests/test_layout.py)."""
