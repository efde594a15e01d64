"""Evidence packs: what a regulator or auditor needs to judge one release or one campaign.

    $ make test                                   # writes reports/pytest.xml
    $ chargeward evidence export --release 1.2.0 --bundle acme-1.2.0.cwb \\
          --test-report reports/pytest.xml --key file:evidence.key -o evidence-1.2.0 --zip
    $ chargeward evidence verify evidence-1.2.0.zip --key evidence.pub.pem

:mod:`.matrix` maps regulations to tests, each part to the party that meets it, and reads
their results from a JUnit report (pure); :mod:`.testrun` ties the report to the commit and
environment of its run; :mod:`.bundle` reads the release bundle's signed and supply-chain
files; :mod:`.pack` collects the rest through the server's REST API and writes the pack
atomically; :mod:`.render` turns it into Markdown and standalone HTML; :mod:`.signing` signs
the pack (DSSE) and verifies it.
"""
