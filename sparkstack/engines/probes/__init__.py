"""Probes: stand-alone scripts that ask an engine build what it accepts.

Each runs with the engine's own Python (inside the pinned image on a host, or in a
throwaway venv holding a PyPI release, see tools/snapshot_engine.py), imports only the
standard library and the engine, and prints one JSON document: the release's version,
every option of its server parser with nargs and choices, the choices of values checked
elsewhere (parsers, speculative methods), the speculative-config keys and the env vars
it reads. `sparkstack.engines.release.EngineRelease` reads that document.
"""
