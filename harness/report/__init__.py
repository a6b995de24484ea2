"""`autoresearch report`: campaigns' ledgers read (never opened, locked or changed) into
figures and tables, written as PNGs, one self-contained report.html and report.md.

    collect.find(root, tags)           -> [CampaignData]  ledgers, states, transfer files
    figures.campaign_figures(c)        -> Figures         counts, best, gain in σ, spend, pace
    figures.discoveries(campaigns)     -> [Discovery]     kept experiments and their replays
    tables.campaigns_table(figs) ...   -> Table           text cells
    plots.progress(c, f, path), plots.cross_device(campaigns, figs, path)
    page.html_page(...), page.md_page(...)

`build.run(cfg)` ties them together for the CLI. Nothing here imports the package back.
"""
