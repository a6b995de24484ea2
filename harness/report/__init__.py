"""`autoresearch report`: campaigns' ledgers read (never opened, locked or changed) into
figures and tables, written as PNGs, one self-contained report.html and report.md.

    collect.find(root, tags)      -> [CampaignData]   the ledgers, states and transfer files
    tables.campaign_row(c)        -> one campaign's figures (plain dicts, numbers or None)
    plots.progress(c, path)       -> progress-<tag>-<slot>.png
    render.write(...)             -> report.html, report.md

`build.run(cfg)` ties them together for the CLI. Nothing here imports the package back.
"""
