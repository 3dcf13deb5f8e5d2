#!/usr/bin/env Rscript
# Reference values from R for Testing/Python/test_stats_roc.py and test_stats_operating.py: pROC's DeLong
# AUC variance, CIs, paired test and covariance, and its Youden operating point; base R's Wilson interval (prop.test without continuity
# correction), McNemar (mcnemar.test, binom.test) and calibration slope/intercept (glm, Wald CIs).
# Run from this folder:  Rscript make_proc_reference.R
# Writes proc_cases.csv (the inputs, long format), proc_auc.csv / proc_pairs.csv (pROC's results),
# calibration_cases.csv and r_misc.csv, so the Python tests need no R. Needs base R and pROC
# (Debian: r-base-core, r-cran-proc).
#
# Data: pROC's published example `aSAH` (Turck et al. 2010; shipped with pROC, GPL-3+, outcome "Poor" is
# positive; s100b, ndka and the ordinal wfns score) and seeded random data sets with ties.
suppressPackageStartupMessages(library(pROC))

num <- function(x) sprintf("%.17g", x)

datasets <- list()
data(aSAH)
datasets$aSAH <- list(truth = as.integer(aSAH$outcome == "Poor"),
                      scores = list(s100b = aSAH$s100b, ndka = aSAH$ndka, wfns = as.numeric(aSAH$wfns)))

set.seed(20240601)
n <- 60; y <- rbinom(n, 1, 0.4); latent <- rnorm(n) + y
datasets$ties_small <- list(truth = y, scores = list(
  a = round(latent + rnorm(n, sd = 0.5), 1), b = round(latent + rnorm(n, sd = 1), 0), c = round(rnorm(n), 1)))

n <- 200; y <- rbinom(n, 1, 0.35); latent <- rnorm(n) + 1.2 * y
datasets$ratings_5pt <- list(truth = y, scores = list(
  reader1 = as.numeric(cut(latent + rnorm(n, sd = 0.6), c(-Inf, -0.5, 0.3, 1, 1.7, Inf))),
  reader2 = as.numeric(cut(latent + rnorm(n, sd = 0.9), c(-Inf, -0.2, 0.5, 1.1, 2, Inf)))))

n <- 500; y <- rbinom(n, 1, 0.1); latent <- rnorm(n) + 0.8 * y
datasets$unbalanced <- list(truth = y, scores = list(
  m1 = latent + rnorm(n, sd = 0.3), m2 = latent + rnorm(n, sd = 1), m3 = 0.5 * latent + rnorm(n),
  m4 = round(plogis(latent + rnorm(n, sd = 0.5)), 2)))

datasets$tiny <- list(truth = c(0, 1, 0, 1, 1, 0), scores = list(
  s = c(0.1, 0.4, 0.4, 0.8, 0.3, 0.2), t = c(1, 2, 3, 3, 2, 1)))

cases <- list(); aucs <- list(); pairs <- list(); youden <- list()
for (name in names(datasets)) {
  d <- datasets[[name]]
  rocs <- lapply(d$scores, function(s) roc(d$truth, s, levels = c(0, 1), direction = "<", quiet = TRUE))
  for (model in names(d$scores)) {
    cases[[length(cases) + 1]] <- data.frame(dataset = name, case = seq_along(d$truth), truth = d$truth,
                                             model = model, score = num(d$scores[[model]]))
    ci95 <- ci.auc(rocs[[model]], method = "delong", conf.level = 0.95)
    ci90 <- ci.auc(rocs[[model]], method = "delong", conf.level = 0.90)
    aucs[[length(aucs) + 1]] <- data.frame(dataset = name, model = model, auc = num(as.numeric(auc(rocs[[model]]))),
                                           var = num(var(rocs[[model]], method = "delong")),
                                           ci_low = num(ci95[1]), ci_high = num(ci95[3]),
                                           ci90_low = num(ci90[1]), ci90_high = num(ci90[3]))
    best <- coords(rocs[[model]], "best", best.method = "youden", ret = c("specificity", "sensitivity"),
                   transpose = FALSE)
    best <- best[which.max(best$specificity), ]  # ties in J: the most specific, as mvcf.stats
    youden[[length(youden) + 1]] <- data.frame(dataset = name, model = model, specificity = num(best$specificity),
                                               sensitivity = num(best$sensitivity))
  }
  models <- names(d$scores)
  for (i in seq_along(models)) for (j in seq_along(models)) if (i < j) {
    test <- roc.test(rocs[[i]], rocs[[j]], method = "delong", paired = TRUE)
    pairs[[length(pairs) + 1]] <- data.frame(
      dataset = name, a = models[i], b = models[j], diff = num(unname(test$estimate[1] - test$estimate[2])),
      z = num(unname(test$statistic)), p = num(test$p.value),
      ci_low = num(test$conf.int[1]), ci_high = num(test$conf.int[2]),
      cov = num(cov(rocs[[i]], rocs[[j]], method = "delong")))
  }
}
write.csv(do.call(rbind, cases), "proc_cases.csv", row.names = FALSE, quote = FALSE)
write.csv(do.call(rbind, aucs), "proc_auc.csv", row.names = FALSE, quote = FALSE)
write.csv(do.call(rbind, pairs), "proc_pairs.csv", row.names = FALSE, quote = FALSE)
write.csv(do.call(rbind, youden), "proc_youden.csv", row.names = FALSE, quote = FALSE)

# Base-R checks of the operating-point and calibration statistics.
misc <- list()
add <- function(check, key, value) misc[[length(misc) + 1]] <<- data.frame(check = check, key = key, value = num(value))
for (xn in list(c(30, 40), c(0, 12), c(12, 12), c(1, 3), c(57, 113))) {
  ci <- suppressWarnings(prop.test(xn[1], xn[2], correct = FALSE))$conf.int
  add("wilson", paste0(xn[1], "/", xn[2], ":low"), ci[1])
  add("wilson", paste0(xn[1], "/", xn[2], ":high"), ci[2])
}
table <- matrix(c(40, 9, 21, 30), 2, 2, byrow = TRUE)  # [[both right, only a], [only b, both wrong]]
test <- mcnemar.test(table, correct = TRUE)
add("mcnemar", "40-9-21-30:statistic", unname(test$statistic)); add("mcnemar", "40-9-21-30:p", test$p.value)
add("mcnemar", "15-10-0-5:p", binom.test(10, 10)$p.value)
add("mcnemar", "15-7-3-5:p", binom.test(7, 10)$p.value)

set.seed(7)
n <- 300; logit_true <- rnorm(n, -0.3, 1.4); y <- rbinom(n, 1, plogis(logit_true))
prob <- round(plogis(0.2 + 1.4 * logit_true + rnorm(n, sd = 0.3)), 4)
write.csv(data.frame(truth = y, prob = num(prob)), "calibration_cases.csv", row.names = FALSE, quote = FALSE)
lp <- qlogis(prob)
slope_fit <- glm(y ~ lp, family = binomial, control = glm.control(epsilon = 1e-14, maxit = 100))
intercept_fit <- glm(y ~ 1, offset = lp, family = binomial, control = glm.control(epsilon = 1e-14, maxit = 100))
add("calibration", "slope", coef(slope_fit)[2]); add("calibration", "intercept", coef(intercept_fit)[1])
add("calibration", "slope_low", confint.default(slope_fit)[2, 1]); add("calibration", "slope_high", confint.default(slope_fit)[2, 2])
add("calibration", "intercept_low", confint.default(intercept_fit)[1, 1])
add("calibration", "intercept_high", confint.default(intercept_fit)[1, 2])
add("calibration", "brier", mean((prob - y)^2))
write.csv(do.call(rbind, misc), "r_misc.csv", row.names = FALSE, quote = FALSE)
cat("pROC", as.character(packageVersion("pROC")), "on", R.version.string, "\n", file = "proc_version.txt")
