#!/bin/sh
# Patients and clinical events by sex, from output/dataset.csv (patient_id,sex,n_events):
# a table (output/summary.csv) and a bar chart of patients (output/chart.svg).
set -eu
tr -d '\r' < output/dataset.csv | awk -F, '
NR == 1 { next }
{ patients[$2] += 1; events[$2] += $3 }
END {
    print "sex,patients,clinical_events" > "output/summary.csv"
    n = 0; max = 0
    for (sex in patients) { order[++n] = sex; if (patients[sex] > max) max = patients[sex] }
    # A stable order: sort the categories by name (insertion sort; there are few).
    for (i = 2; i <= n; i++) { v = order[i]; j = i - 1; while (j > 0 && order[j] > v) { order[j + 1] = order[j]; j-- } order[j + 1] = v }
    width = 60 * n + 40
    print "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" width "\" height=\"260\">" > "output/chart.svg"
    print "<title>Patients by sex</title>" > "output/chart.svg"
    for (i = 1; i <= n; i++) {
        sex = order[i]
        print sex "," patients[sex] "," events[sex] > "output/summary.csv"
        h = (max > 0) ? int(200 * patients[sex] / max) : 0
        x = 20 + 60 * (i - 1)
        printf "<rect x=\"%d\" y=\"%d\" width=\"40\" height=\"%d\" fill=\"#4472c4\"><title>%s: %d</title></rect>\n", x, 220 - h, h, sex, patients[sex] > "output/chart.svg"
        printf "<text x=\"%d\" y=\"240\" font-size=\"10\">%s</text>\n", x, sex > "output/chart.svg"
    }
    print "</svg>" > "output/chart.svg"
}'
