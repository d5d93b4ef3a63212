"""The live class: an answer store shared across sessions (`store`), the lessons' questions and teacher notes
(`content`), and the Streamlit widgets of the teacher's and the students' pages (`widgets`)."""
