"""What a board needs from its host, beside the agent itself.

`install` makes a board a systemd service (a system user, /etc/meterchain, /var/lib/meterchain,
a unit with the watchdog and credentials); `notify` speaks systemd's notification protocol;
`status` says what the agent is doing, from its store; `disk` keeps the store writable when the
SD card fills; `solar` is the clear-sky PV model the board forecasts with (numpy only);
`skew` estimates how far the board's clock is off from the market's messages;
`supervisor` runs beside the agent and ties them together. See docs/board.md.

Nothing here imports the chain, web or pandas: a board runs on a 1 GB ARM computer.
"""
