"""The shipped demo: three teacher/student pairs on data that ships with installed packages, with weights in assets/."""
