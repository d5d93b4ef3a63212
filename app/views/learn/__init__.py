"""The Learn group: a classroom walk through MoE routing on a toy 2-D router (see analysis.teaching).

`LESSONS` lists the pages in order as (file name in this folder, title, material icon); app/main.py
adds them under a "Learn" navigation group, followed by the live-class pages `CLASS_PAGES` (file, title, icon,
url path). Every lesson's settings live in the URL (app.learn_state).
"""

LESSONS: list[tuple[str, str, str]] = [
    ("lesson_1_partition.py", "1 · A router partitions space", ":material/school:"),
    ("lesson_2_gates.py", "2 · Top-k and gates", ":material/call_split:"),
    ("lesson_3_bias.py", "3 · Imbalance and the bias rule", ":material/balance:"),
    ("lesson_4_aux_loss.py", "4 · Aux loss vs aux-loss-free", ":material/compare_arrows:"),
    ("lesson_5_capacity.py", "5 · Capacity and dropped tokens", ":material/block:"),
    ("lesson_6_real.py", "6 · From toy to real", ":material/rocket_launch:"),
]

CLASS_PAGES: list[tuple[str, str, str, str]] = [
    ("class_teacher.py", "Live class (teacher)", ":material/groups:", "class_teacher"),
    ("class_join.py", "Join a class", ":material/smartphone:", "class_join"),
]
