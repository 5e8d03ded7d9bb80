"""The one exception type nnssl raises for problems the user can fix."""


class NnsslError(Exception):
    """A user-facing problem: the message is one line that names the file and the fix.

    nnssl's command-line tools print it as ``<tool>: error: <message>`` and exit with code 2,
    without a traceback. Inside ``nnUNetv2_train`` the trainers turn it into ``SystemExit``.
    """
