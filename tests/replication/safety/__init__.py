"""
One or more tests per replication safety rule of DESIGN.md section 5, one module per rule.

Every test runs in process: nodes on real files in ``tmp_path``, driven by an
``InlineReactor`` clock, their WAL writer either inline or behind a
``ManualPool`` (a disk that finishes only when the test says so), peers and
follower links faked. Above each test, "Fails if" names the one-line change
to ``kvd`` that the test was checked to catch. Rule 13's ZooKeeper half is
covered by the integration tests.

The tests written for the findings of the protocol review (one test per
finding) come after a rule's own tests in its module, under a header comment of
their own. Helpers shared by the modules are in ``support``, their fixtures in
``conftest``.
"""
