"""REST API (Flask app served by waitress)."""
