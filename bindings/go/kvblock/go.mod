module kvblock

go 1.19
