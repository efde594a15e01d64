"""Supply chain of a release: component list, SBOM, vulnerability gate, provenance.

components.py  the release's declared components and libraries; pinned components
sbom.py        CycloneDX 1.6 JSON: build (reproducible), validate, read back
advisories.py  OSV advisories from a local directory
matching.py    package URL -> OSV package; version -> affected / indeterminate
versions.py    version order per ecosystem (univers) and OSV ranges; Git tag names
severity.py    CVSS and named ratings
allowlist.py   accepted risks: approved, justified, expiring
gate.py        the decision and its deterministic report
report_check.py  the server's re-check of an uploaded report (findings, own advisories)
vex.py         accepted findings as OpenVEX
provenance.py  in-toto Statement v1 with a SLSA provenance v1 predicate, in a DSSE envelope
rebuild.py     the reproducible-build check: build twice, compare digests
"""
