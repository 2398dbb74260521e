"""Whether SIGINT or SIGTERM has reached this process during a run (lifecycle's handler sets it).

The handler raises KeyboardInterrupt where the signal lands, but Python drops an exception
raised inside a weakref callback or a __del__ ("Exception ignored in ..."): under load a Ctrl-C
landed in an import lock's callback and the run trained on to `completed`. The training loop
asks here after every batch, so a lost interrupt still stops the run at the next batch.
"""

from __future__ import annotations

# depth: how many runs of this process are inside lifecycle.interrupts_as_keyboard_interrupt (a
# study and its child: 2); fired: a signal came, so every level is saving and signals stay
# ignored until the outermost run has written its status.
state = {"depth": 0, "fired": False}


def raise_if_interrupted() -> None:
    if state["fired"]:
        raise KeyboardInterrupt
