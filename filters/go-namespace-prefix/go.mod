module example.com/event-collector/filters/go-namespace-prefix

go 1.24
