"""The paper's experiments as pipeline configs (`--config=paper/table1`); common.py holds their builders."""
