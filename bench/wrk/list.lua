-- W3: the first page of 50.
wrk.method = "GET"
wrk.path = "/tasks?limit=50"
