-- Probe results recorded by bin/exporter.py.
CREATE TABLE probe_results (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    probe       TEXT    NOT NULL,
    up          INTEGER NOT NULL CHECK (up IN (0, 1)),
    duration_ms INTEGER NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX probe_results_by_probe ON probe_results (probe, at);
