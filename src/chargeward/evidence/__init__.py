"""Evidence packs: what a regulator or auditor needs to judge one release or one campaign.

    $ make test                                   # writes reports/pytest.xml
    $ chargeward evidence export --release 1.2.0 --bundle acme-1.2.0.cwb \\
          --test-report reports/pytest.xml -o evidence-1.2.0 --zip

:mod:`.matrix` maps regulations to tests and reads their results from a JUnit report (pure),
:mod:`.bundle` reads the release bundle's signed and supply-chain files, :mod:`.pack`
collects the rest through the server's REST API and writes the pack atomically, and
:mod:`.render` turns it into Markdown and standalone HTML.
"""
