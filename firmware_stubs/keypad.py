"""A wired keypad (line protocol); the commands are those of ``firmware_stubs.line_bus``.

python -m firmware_stubs.keypad --pty --address 3
"""

from firmware_stubs.line_bus import main

if __name__ == "__main__":
    main("keypad")
