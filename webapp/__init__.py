"""The Gradio app's handlers, one module per tab, plus the state they share.

``app.py`` lays the page out and wires these plain functions to it; tests call them directly.
"""
