"""The running Linli application: config, database, rendering, Telegram wiring, sandbox."""
