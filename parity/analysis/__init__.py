"""The analysis report (`parity tables`): tables and claim verdicts computed by running the adapters.

Nothing in a table is typed by hand. Each cell is an observation made by running an adapter on a
small probe case built in code, through the calls a comparison makes (`parity.run.execute.execute`,
the adapter's own methods), and watching what it hands on:

  probe_runner.py           every adapter, one instance per dtype (one Context per dtype), and a memo of results
  dit_watch.py              what the DiT is handed, seen from outside through global module hooks
  text_observations.py      observations of the text path (think tokens, template source, padding, lengths...)
  sampling_observations.py  observations of the sampling path (alignment, schedule, time input, guidance...)
  differences.py            the 'Implementation differences' table: one row per difference, one column per adapter
  capabilities.py           the 'Capabilities' table: what each adapter can run at all
  claims.py                 the claims ledger (fixtures/claims.toml): statements tied to registered checks
  claim_checks.py           the checks a claim can name, registered by name (run the adapters, return a verdict)
  markdown.py               GitHub-flavoured Markdown cells and tables
  tables_command.py         `parity tables`: the document, stdout, --out, --check
"""
