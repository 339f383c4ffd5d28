"""The API's service layer: what a request does to the job store, apart from HTTP.

Routes parse the request and shape the response; the functions here validate against the settings,
build the rows and write them (keyword-only arguments, typed results, as in the FastAPI template's
`crud.py`). They raise the API's problem errors (`app.errors`), which the routes let through."""
