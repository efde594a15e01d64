"""The dashboard's routes (:mod:`chargeward.server.http.web`), listed for the authorization
table."""

WEB_ROUTES = [
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/totp-enrolment"),
    ("POST", "/totp-enrolment"),
    ("GET", "/"),
    ("GET", "/campaigns"),
    ("POST", "/campaigns"),
    ("GET", "/campaigns/preview"),
    ("GET", "/campaigns/{ref}"),
    ("GET", "/campaigns/{ref}/live"),
    ("GET", "/campaigns/{ref}/stations/{station_id}"),
    ("POST", "/campaigns/{ref}/{action}"),
    ("GET", "/releases"),
    ("GET", "/releases/{release_id}"),
    ("POST", "/releases/{release_id}/approve"),
    ("POST", "/releases/{release_id}/publish"),
    ("GET", "/security"),
    ("GET", "/audit"),
    ("GET", "/audit/{index}"),
    ("GET", "/static/{name}"),
]
