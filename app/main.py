"""Streamlit entry: page config, the shared source/step selector, and navigation.

Run with `moe-explorer app` (or `streamlit run app/main.py`). Pages are thin files in app/views/;
the Learn group comes from app.views.learn.LESSONS when present.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import session

HERE = Path(__file__).parent
PAGES = [  # (file, title, icon, url_path)
    ("overview.py", "Overview", ":material/info:", "overview"),
    ("token_routing.py", "Token routing", ":material/route:", "token_routing"),
    ("heatmaps.py", "Expert heatmaps", ":material/grid_on:", "heatmaps"),
    ("training.py", "Training dynamics", ":material/show_chart:", "training"),
    ("compare.py", "Compare runs", ":material/compare_arrows:", "compare"),
    ("geometry.py", "Router geometry", ":material/scatter_plot:", "geometry"),
    ("expert.py", "Expert profile", ":material/person_search:", "expert"),
    ("causal.py", "Causal check", ":material/science:", "causal"),
    ("train.py", "Train", ":material/model_training:", "train"),
]

st.set_page_config(page_title="MoE explorer", page_icon=":material/hub:", layout="wide")

explore = [st.Page(HERE / "views" / file, title=title, icon=icon, url_path=url) for file, title, icon, url in PAGES[1:]]
# The default page is served at "/" and Streamlit ignores its url_path, so "/overview" would open "Page not found".
# Overview is therefore the default page with an empty url_path, and a hidden page at "/overview" forwards there
# (with the link's query parameters), so both addresses open it and the menu marks it.
overview = st.Page(HERE / "views" / PAGES[0][0], title=PAGES[0][1], icon=PAGES[0][2], url_path="", default=True)
forward = st.Page(
    lambda: st.switch_page(overview, query_params=st.query_params.to_dict()),
    title=PAGES[0][1],
    url_path=PAGES[0][3],
    visibility="hidden",
)
groups = {"Explore": [overview, *explore, forward]}
lessons = []
try:
    from app.views.learn import LESSONS

    lessons = [(HERE / "views" / "learn" / file, title, icon) for file, title, icon in LESSONS]
    lessons = [st.Page(f, title=title, icon=icon) for f, title, icon in lessons if f.is_file()]
    if lessons:
        groups["Learn"] = lessons
    from app.views.learn import CLASS_PAGES  # the live class: the teacher's screen and the students' phones

    lessons += [st.Page(HERE / "views" / "learn" / f, title=t, icon=i, url_path=u) for f, t, i, u in CLASS_PAGES]
    groups["Learn"] = lessons
except ImportError:  # the Learn pages are optional
    pass

page = st.navigation(groups)
st.sidebar.title("MoE explorer")
session.sidebar_selector(share=page not in lessons)  # a lesson's URL holds its own settings (app/learn_state.py)
session.image_format_selector()
page.run()
