"""Pure plotly figure builders shared by the app and the HTML report: tables / arrays in, `go.Figure` out.

One module per subject, always called through it (`figures.routing.token_layer_grid`): colors (expert
colours, escaping), export (the image-download config), routing, heatmaps, training, geometry, lessons
(the Learn pages), profile (one expert). Table shaping lives in `analysis.tables`. No Streamlit here.
"""

from analysis.figures import colors, export, geometry, heatmaps, lessons, profile, routing, training

__all__ = ["colors", "export", "geometry", "heatmaps", "lessons", "profile", "routing", "training"]
